"""`training.compile` through the loop (bf16 autocast, the fused loss eager): the decoder blocks
run compiled, the run learns what the eager run learns, checkpoints keep the plain parameter
names, and a run resumed from a checkpoint ends bit-identical to the uninterrupted one.

Slow-ish (one inductor compile of a decoder block, forward and backward, shared by every block
and both runs of the module)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.training import checkpoint as ckpt
from weighted_mtp.models.compile import compile_blocks, compiled_blocks
from weighted_mtp.training.loop import train

BASELINE = REPO / "configs" / "baseline" / "baseline.yaml"
OVERRIDES = {"training.max_steps": 6, "training.mixed_precision": "bf16", "checkpoint.save_checkpoint_every": 0.3,
             "models.policy.path": "embedded:micro-llama"}


def _losses(run_dir):
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e["train/loss"] for e in events if "train/loss" in e]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, micro_model_dir):
    root = tmp_path_factory.mktemp("compile")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(load_config(BASELINE, tiny_training_overrides(**OVERRIDES, **{"training.compile": True})),
                     root / "compiled", show_progress=False)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    eager = train(load_config(BASELINE, tiny_training_overrides(**OVERRIDES)), root / "eager", show_progress=False)
    return root, compiled, eager, graphs


def test_compiled_blocks_run_and_learn_like_eager(runs):
    root, compiled, eager, graphs = runs
    assert graphs >= 1  # dynamo compiled something: the blocks did not silently run eager
    assert compiled.steps == eager.steps == 6
    a, b = _losses(root / "compiled"), _losses(root / "eager")
    assert a[0] == pytest.approx(b[0], rel=2e-2)  # same first batch, same weights: bf16 rounding apart
    assert a[-1] < a[0] - 0.1  # and it learns
    # The export has the plain HF parameter names: no torch.compile wrapper leaked into it.
    saved = load_file(root / "compiled" / "final" / "model.safetensors")
    assert saved.keys() == load_file(root / "eager" / "final" / "model.safetensors").keys()
    assert not any("_orig_mod" in k for k in saved)


def test_compiled_resume_from_step_3_equals_uninterrupted_run(runs, tmp_path):
    root = runs[0]
    step3 = root / "compiled" / "checkpoints" / ckpt.checkpoint_name(3)
    shutil.copytree(step3, tmp_path / "resumed" / "checkpoints" / step3.name)
    cfg = load_config(BASELINE, tiny_training_overrides(**OVERRIDES, **{"training.compile": True}))
    result = train(cfg, tmp_path / "resumed", resume=True, show_progress=False)
    assert result.steps == 6
    a = MTPModel.from_pretrained(root / "compiled" / "final")
    b = MTPModel.from_pretrained(tmp_path / "resumed" / "final")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


def test_compile_blocks_covers_trunk_and_heads_once(micro_model_dir):
    model = MTPModel.from_pretrained(micro_model_dir, n_future_tokens=3)
    blocks = compiled_blocks(model)
    assert len(blocks) == model.config.num_hidden_layers + 2
    assert compile_blocks(model) == len(blocks) and compile_blocks(model) == 0
    assert set(model.state_dict()) == set(MTPModel.from_pretrained(micro_model_dir, n_future_tokens=3).state_dict())


def test_a_deep_copy_of_a_compiled_block_runs_its_own_weights(micro_model_dir):
    """MTP heads are deep copies of the last block: once the blocks are compiled, a copy must not
    stay bound to the block it was copied from."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    compile_blocks(lm, math_attention=True)
    model = MTPModel(lm, 3)  # heads 2 and 3: copies of the compiled last block
    with torch.no_grad():
        for p in model.extra_heads[0].parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids = torch.randint(0, 100, (2, 7))
    out = model(ids, torch.ones_like(ids))
    assert not torch.allclose(out.head_hidden[1], out.head_hidden[2])  # head 2 was changed, head 3 not
    eager = MTPModel(AutoModelForCausalLM.from_pretrained(micro_model_dir), 3)
    eager.load_state_dict(model.state_dict())
    ref = eager(ids, torch.ones_like(ids))
    for a, b in zip(out.head_hidden, ref.head_hidden):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
