"""The critic objective through the one loop: a frozen backbone stays bit-identical, the value
head learns, the issue's metric names are logged, and asking for too many pairs is handled."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.errors import DataError
from weighted_mtp.models.critic import CriticModel
from weighted_mtp.training.loop import train

PAIRWISE = REPO / "configs" / "critic" / "critic_pairwise.yaml"
POINTWISE = REPO / "configs" / "critic" / "critic.yaml"


def _overrides(**extra):
    return tiny_training_overrides(**{"data_sampling.pairwise.n_pairs": 24, "data_sampling.pairwise.val_n_pairs": 8,
                                      "data_sampling.train_eval_n_samples": 8, "training.max_steps": 4,
                                      "training.value_head_learning_rate": 1e-2, **extra})


@pytest.mark.parametrize("config", [PAIRWISE, POINTWISE], ids=["pairwise", "pointwise"])
def test_frozen_critic_trains_head_only_and_logs_metrics(tmp_path, micro_model_dir, config):
    cfg = load_config(config, _overrides())
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert result.steps == 4
    critic = CriticModel.from_pretrained(tmp_path / "run" / "final")
    original = load_file(micro_model_dir / "model.safetensors")
    for name, param in critic.backbone.named_parameters():
        assert torch.equal(param, original[f"model.{name}"]), name  # frozen: bit-identical
    assert critic.value_head.net[-1].weight.abs().sum() > 0  # the zero-initialised last layer moved
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [e for e in events if "val/auc" in e][-1]
    for key in ("val/pairwise_accuracy", "val/auc", "val/mean_correct", "val/mean_incorrect", "val/gap", "val/f1",
                "train_eval/pairwise_accuracy", "gap/pairwise_accuracy", "val/position_corr"):
        assert key in val, key
    assert val["gap/pairwise_accuracy"] == pytest.approx(val["train_eval/pairwise_accuracy"] - val["val/pairwise_accuracy"])
    assert events[0]["data/problem_overlap"] == 0
    if config == PAIRWISE:
        assert any("train/pairwise_accuracy" in e for e in events)


def test_too_many_pairs_uses_what_exists_or_fails_when_strict(tmp_path, micro_model_dir, capsys):
    many = {"data_sampling.pairwise.n_pairs": 10**6, "data_sampling.max_pairs_per_problem": 1}
    cfg = load_config(PAIRWISE, _overrides(**many, **{"training.max_steps": 1}))
    train(cfg, tmp_path / "lenient", show_progress=False)
    assert "asked for 1000000 pairs, only" in capsys.readouterr().out
    strict = load_config(PAIRWISE, _overrides(**many, **{"data_sampling.strict": True}))
    with pytest.raises(DataError, match=r"train\.jsonl: asked for 1000000 pairs, only \d+ exist.*strict"):
        train(strict, tmp_path / "strict", show_progress=False)
