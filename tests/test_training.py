"""The one loop, end to end on the micro model: parameters move, loss falls, resume is exact,
a non-finite loss stops the run and keeps the last good checkpoint."""

import json
import shutil

import pytest
import torch

from conftest import REPO, tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.errors import TrainingError
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.objectives import OBJECTIVES
from weighted_mtp.objectives.baseline import BaselineObjective
from weighted_mtp.training import checkpoint as ckpt
from weighted_mtp.training.loop import train

BASELINE = REPO / "configs" / "baseline" / "baseline.yaml"


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def ten_step_run(tmp_path_factory, micro_model_dir):
    cfg = load_config(BASELINE, tiny_training_overrides())
    initial = _params(MTPModel.from_pretrained(micro_model_dir, n_future_tokens=4))
    run_dir = tmp_path_factory.mktemp("run") / "baseline"
    result = train(cfg, run_dir, show_progress=False)
    return cfg, initial, run_dir, result


def test_every_trainable_parameter_changes_and_loss_falls(ten_step_run):
    cfg, initial, run_dir, result = ten_step_run
    assert result.steps == 10
    final = MTPModel.from_pretrained(run_dir / "final")
    assert final.n_future_tokens == 4
    for name, param in final.named_parameters():
        assert not torch.equal(param, initial[name]), f"{name} did not change"
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [e["train/loss"] for e in events if "train/loss" in e]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1
    assert all(isinstance(e["step"], int) for e in events)
    assert any("val/ce_head4" in e for e in events)
    first_train = next(e for e in events if "train/loss" in e)
    assert all(f"train/ce_head{k}" in first_train for k in range(1, 5))
    assert events[0]["data/problem_overlap"] == 0  # validation problems are unseen in training


def test_resume_from_step_5_equals_uninterrupted_run(ten_step_run, tmp_path):
    cfg, _, run_dir, _ = ten_step_run
    step5 = run_dir / "checkpoints" / ckpt.checkpoint_name(5)
    assert step5.is_dir()
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(step5, resumed_dir / "checkpoints" / step5.name)
    result = train(cfg, resumed_dir, resume=True, show_progress=False)
    assert result.steps == 10
    a = MTPModel.from_pretrained(run_dir / "final")
    b = MTPModel.from_pretrained(resumed_dir / "final")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


def test_run_dir_with_checkpoints_is_never_overwritten(ten_step_run):
    cfg, _, run_dir, _ = ten_step_run
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    with pytest.raises(Exception, match="--resume"):
        train(cfg, run_dir, show_progress=False)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


class _NanAfter(BaselineObjective):
    calls = 0

    def __call__(self, model, batch, *, training):
        out = super().__call__(model, batch, training=training)
        if training:
            type(self).calls += 1
            if type(self).calls > 6:
                out.loss = out.loss * float("nan")
        return out


def test_non_finite_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, monkeypatch, micro_model_dir):
    monkeypatch.setitem(OBJECTIVES, "nan_test", _NanAfter)
    cfg = load_config(BASELINE, tiny_training_overrides(**{"experiment.stage": "nan_test"}))
    with pytest.raises(TrainingError, match=r"non-finite loss .* step 7.*step_00000005"):
        train(cfg, tmp_path / "run", show_progress=False)
    kept = ckpt.latest_checkpoint(tmp_path / "run")
    assert kept.name == ckpt.checkpoint_name(5)
    model = MTPModel.from_pretrained(kept / ckpt.MODEL_SUBDIR)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cli_train_then_resume_with_saved_config(tmp_path, capsys, micro_model_dir):
    from weighted_mtp.cli import main

    run_dir = tmp_path / "run"
    overrides = [a for o in tiny_training_overrides(**{"training.max_steps": 4}) for a in ("--override", o)]
    assert main(["train", str(BASELINE), "--output-dir", str(run_dir), *overrides]) == 0
    assert f"run directory: {run_dir}" in capsys.readouterr().out
    assert ckpt.latest_checkpoint(run_dir).name == ckpt.checkpoint_name(4)
    # No CONFIG: the run's own resolved config.yaml is used; the run continues from step 4.
    assert main(["train", "--resume", str(run_dir), "--override", "training.max_steps=6"]) == 0
    assert ckpt.latest_checkpoint(run_dir).name == ckpt.checkpoint_name(6)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6 and 5 in steps


def test_bf16_autocast_keeps_fp32_master_weights(tmp_path, micro_model_dir):
    cfg = load_config(BASELINE, tiny_training_overrides(**{
        "training.mixed_precision": "bf16", "training.max_steps": 3, "dataset.pad_to_multiple_of": 64}))
    result = train(cfg, tmp_path / "bf16", show_progress=False)
    assert result.steps == 3 and all(
        torch.isfinite(torch.tensor(v)) for k, v in result.last_train.items() if k.startswith("train/ce_head"))
    model = MTPModel.from_pretrained(tmp_path / "bf16" / "final")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_loop_trains_any_local_hf_causal_lm(tmp_path, micro_model_dir, arch):
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    from weighted_mtp.models.load import load_tokenizer

    tok = load_tokenizer(micro_model_dir)
    torch.manual_seed(0)
    if arch == "qwen2":
        lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2))
    else:
        lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    model_dir = tmp_path / arch
    lm.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cfg = load_config(BASELINE, tiny_training_overrides(**{
        "models.policy.path": str(model_dir), "models.policy.n_future_tokens": 2, "training.max_steps": 3}))
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert result.steps == 3 and "train/ce_head2" in result.last_train and "train/ce_head3" not in result.last_train
    final = MTPModel.from_pretrained(tmp_path / "run" / "final")
    assert type(final.lm).__name__ == type(lm).__name__ and final.n_future_tokens == 2


def test_best_pointer_names_the_step_with_the_lowest_val_loss(tmp_path, micro_model_dir):
    # Validation every 3 steps, periodic saves every 5: a best found at step 3 or 9 is saved anyway.
    cfg = load_config(BASELINE, tiny_training_overrides(**{
        "training.eval_every": 0.3, "checkpoint.save_checkpoint_every": 0.5, "checkpoint.save_total_limit": 1}))
    run_dir = tmp_path / "run"
    train(cfg, run_dir, show_progress=False)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = {e["step"]: e["val/loss"] for e in events if "val/loss" in e}
    assert sorted(vals) == [3, 6, 9, 10]
    best_step = min(vals, key=vals.get)
    assert ckpt.best_checkpoint(run_dir).name == ckpt.checkpoint_name(best_step)
    kept = {p.name for p in ckpt.list_checkpoints(run_dir)}
    assert kept == {ckpt.checkpoint_name(10), ckpt.checkpoint_name(best_step)}  # newest + best survive rotation
