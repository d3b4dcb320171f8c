"""Sequential MTP heads through the one training loop: exact resume (a run resumed from its
step-3 checkpoint ends bit-identical), and FSDP2 on 2 processes (gloo) against one process on
the same global batches, with DeepSeek-style head scales. Tiny runs on the 2-layer Llama."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import REPO
from test_distributed import tiny_overrides, torchrun_worker
from tiny_runs import in_process_train, logged
from weighted_mtp.config import load_config
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.training import checkpoint as ckpt

BASELINE = REPO / "configs" / "baseline" / "baseline.yaml"
SEQUENTIAL = {"models.policy.head_type": "sequential", "models.policy.n_future_tokens": 3,
              "training.loss.head_scales": "[1.0,0.3,0.3]",
              # the same 13 / 5 rows whether the baseline reads rows or the correct side of pairs
              "data_sampling.pairwise.n_pairs": 13, "data_sampling.pairwise.val_n_pairs": 5}


def overrides(tiny_lm_model_dir, **extra):
    return tiny_overrides(tiny_lm_model_dir, **{**SEQUENTIAL, **extra})


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_lm_model_dir):
    run_dir = tmp_path_factory.mktemp("seq_single") / "run"
    cfg = load_config(BASELINE, overrides(tiny_lm_model_dir))
    return cfg, run_dir, in_process_train(cfg, run_dir)


def test_heads_train_and_resume_is_exact(single, tmp_path):
    cfg, run_dir, _ = single
    final = MTPModel.from_pretrained(run_dir / "final")
    assert final.head_type == "sequential" and final.n_future_tokens == 3
    first = logged(run_dir, "train/ce_head3")
    assert first and all(v["train/ce_head3"] > 0 for v in first.values())
    checkpoints = sorted((run_dir / ckpt.CHECKPOINT_DIR).glob("step_*"))
    early = checkpoints[0]
    assert early.name != ckpt.checkpoint_name(3), checkpoints  # a mid-run checkpoint to resume from
    resumed = tmp_path / "resumed"
    shutil.copytree(early, resumed / ckpt.CHECKPOINT_DIR / early.name)
    in_process_train(cfg, resumed, resume=True)
    again = MTPModel.from_pretrained(resumed / "final")
    for (name, a), (_, b) in zip(final.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name


def test_fsdp2_matches_one_process(single, tmp_path, tiny_lm_model_dir):
    _, single_dir, _ = single
    ranks, stdout = torchrun_worker(tmp_path / "run", tmp_path / "dump",
                                    overrides(tiny_lm_model_dir, **{"distributed.strategy": "fsdp2"}))
    assert "distributed: fsdp2 over 2 processes (gloo)" in stdout
    ref, got = logged(single_dir, "train/loss"), logged(tmp_path / "run", "train/loss")
    assert sorted(got) == sorted(ref)
    assert max(abs(got[s]["train/loss"] - ref[s]["train/loss"]) for s in ref) < 1e-4
    reference = dict(MTPModel.from_pretrained(single_dir / "final").named_parameters())
    params = ranks[0]["params"]
    assert any("eh_proj" in n for n in params)
    for name, value in params.items():
        torch.testing.assert_close(value, reference[name].detach(), rtol=0, atol=1e-4, msg=name)
