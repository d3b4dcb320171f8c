"""StepER's loss: the uncertainty weighting against hand-worked values, the per-task CE against a
naive full-logits loop, and the learned sigmas moving (or not, for `uniform`) in the real loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.data.collate import SFTCollator
from weighted_mtp.data.records import Record, iter_records
from weighted_mtp.errors import DataError
from weighted_mtp.losses.uncertainty import uncertainty_weighted_loss


def test_uncertainty_loss_value_and_gradient_by_hand():
    losses = torch.tensor([2.0, 0.5, 1.0])
    s = torch.tensor([0.0, math.log(2.0), -1.0], requires_grad=True)
    total = uncertainty_weighted_loss(losses, s)
    # 0.5*e^0*2 + 0 ; 0.5*(1/2)*0.5 + 0.5*ln2 ; 0.5*e*1 - 0.5
    expected = 1.0 + (0.125 + 0.5 * math.log(2.0)) + (0.5 * math.e - 0.5)
    assert total.item() == pytest.approx(expected, abs=1e-6)
    total.backward()
    # d/ds_j = 0.5 - 0.5 * exp(-s_j) * L_j
    assert s.grad.tolist() == pytest.approx([0.5 - 1.0, 0.5 - 0.125, 0.5 - 0.5 * math.e], abs=1e-6)


def test_uncertainty_optimum_is_log_of_the_task_loss_and_absent_tasks_are_inert():
    losses = torch.tensor([3.0, 0.2, 1.0])
    s = torch.log(losses).clone().requires_grad_(True)
    uncertainty_weighted_loss(losses, s).backward()
    assert s.grad.abs().max().item() < 1e-6
    s2 = torch.zeros(3, requires_grad=True)
    total = uncertainty_weighted_loss(losses, s2, torch.tensor([True, False, True]))
    assert total.item() == pytest.approx(0.5 * 3.0 + 0.5 * 1.0)
    total.backward()
    assert s2.grad[1].item() == 0.0 and s2.grad[0].item() != 0.0


def _rows():
    rows = []
    for i in range(12):
        task = ("init", "exp", "agg")[i % 3]
        rows.append(Record(instruction=f"Question: who directed film {i}?", input=f"Film {i} was directed by Ana.",
                           output="Film was directed by Ana." + (" So the answer is: Ana." if task == "agg" else ""),
                           task_id=f"q{i}:{task}:1", is_correct=True, problem_id=f"q{i}", difficulty=2,
                           step_task=task))
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r.to_json_dict()) + "\n" for r in rows))
    return path


def test_step_task_column_round_trips_and_rejects_unknown_kinds(tmp_path):
    path = _write(tmp_path / "steps.jsonl", _rows())
    assert [r.step_task for r in iter_records(path)][:3] == ["init", "exp", "agg"]
    bad = tmp_path / "bad.jsonl"
    obj = _rows()[0].to_json_dict() | {"step_task": "middle"}
    bad.write_text(json.dumps(_rows()[1].to_json_dict()) + "\n" + json.dumps(obj) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'step_task' must be one of init, exp, agg"):
        list(iter_records(bad))


def test_per_task_losses_match_a_naive_loop(tiny_lm_model_dir, tmp_path):
    from weighted_mtp.models.load import load_tokenizer
    from weighted_mtp.models.mtp import MTPModel
    from weighted_mtp.objectives.steper import StepERObjective

    cfg = load_config("configs/steper/steper.yaml", ["models.policy.n_future_tokens=1"])
    objective = StepERObjective(cfg)
    with torch.no_grad():
        objective.log_vars.copy_(torch.tensor([0.3, -0.2, 0.7]))
    tok = load_tokenizer(tiny_lm_model_dir)
    model = MTPModel.from_pretrained(tiny_lm_model_dir, n_future_tokens=1)
    batch = SFTCollator(tok, 128)(_rows()[:5])  # init, exp, agg, init, exp
    out = objective(model, batch, training=True)
    logits = model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    naive = []
    for j in range(3):
        total, count = 0.0, 0
        for b in range(5):
            if batch["step_task"][b] != j:
                continue
            for t in range(batch["labels"].shape[1] - 1):
                target = batch["labels"][b, t + 1].item()
                if target != -100:
                    total += -torch.log_softmax(logits[b, t], -1)[target].item()
                    count += 1
        naive.append(total / count)
    assert [out.metrics[f"ce_{n}"].item() for n in ("init", "exp", "agg")] == pytest.approx(naive, rel=1e-4)
    s = [0.3, -0.2, 0.7]
    expected = sum(0.5 * math.exp(-sj) * lj + 0.5 * sj for sj, lj in zip(s, naive))
    assert out.loss.item() == pytest.approx(expected, rel=1e-4)
    out.loss.backward()
    assert objective.log_vars.grad is not None and objective.log_vars.grad.abs().min() > 0


@pytest.mark.parametrize("weighting", ["uncertainty", "uniform"])
def test_sigmas_move_only_when_learned(tiny_lm_model_dir, tmp_path, weighting):
    from weighted_mtp.training.loop import train

    data = _write(tmp_path / "steps.jsonl", _rows() * 3)
    overrides = tiny_training_overrides(**{
        "models.policy.path": str(tiny_lm_model_dir), "models.policy.n_future_tokens": 1,
        "dataset.train": str(data), "dataset.validation": str(data), "data_sampling.n_samples": 36,
        "training.max_steps": 8, "training.objective_learning_rate": 0.05, "steper.weighting": weighting,
        "checkpoint.save_checkpoint_every": 0, "checkpoint.save_best": False})
    cfg = load_config("configs/steper/steper.yaml", overrides)
    result = train(cfg, tmp_path / "run", show_progress=False)
    sigmas = [result.last_train[f"train/sigma_{n}"] for n in ("init", "exp", "agg")]
    if weighting == "uniform":
        assert sigmas == [1.0, 1.0, 1.0]
    else:
        assert all(abs(s - 1.0) > 0.05 for s in sigmas), sigmas
    assert math.isfinite(result.last_val["val/loss"]) and "val/ce_agg" in result.last_val
