"""Rho-1 through the objective and the loop: a perfect reference gives zero excess, the top-k
mask keeps the configured share of tokens, and a precomputed ref_ce column replaces the model."""

from __future__ import annotations

import pytest
import torch

from conftest import REPO, tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.data.collate import SFTCollator
from weighted_mtp.errors import ConfigError
from weighted_mtp.objectives import rho1 as rho1_module
from weighted_mtp.objectives.rho1 import Rho1Objective
from weighted_mtp.training.data_feed import load_split
from weighted_mtp.training.loop import train

CONFIG = REPO / "configs" / "rho1" / "rho1.yaml"


def _cfg(**extra):
    return load_config(CONFIG, tiny_training_overrides(**{"dataset.max_length": 160, **extra}))


def _batch(cfg, tokenizer, n=4):
    batch = SFTCollator(tokenizer, cfg.dataset.max_length)(load_split(cfg, "train", False, n=n).items)
    batch.pop("n_truncated")
    return batch


def _spy(monkeypatch):
    seen = []
    original = rho1_module.WEIGHTINGS["rho1"]

    def spy(inputs, ctx):
        seen.append(inputs)
        return original(inputs, ctx)

    monkeypatch.setitem(rho1_module.WEIGHTINGS, "rho1", spy)
    return seen


def test_perfect_reference_gives_zero_excess(micro_model_dir, monkeypatch):
    # The reference is the policy's own starting point: head 1 of the MTP model and the plain HF
    # model are the same next-token predictor, so excess loss must vanish.
    cfg = _cfg(**{"models.reference.path": micro_model_dir})
    objective = Rho1Objective(cfg)
    model, tokenizer, _ = objective.build_model()
    seen = _spy(monkeypatch)
    model.eval()
    out = objective(model, _batch(cfg, tokenizer), training=True)
    (inputs,) = seen
    excess = (inputs.policy_ce - inputs.reference_ce)[inputs.mask]
    assert inputs.mask.sum() > 100
    assert excess.abs().max() <= 1e-6
    assert inputs.policy_ce[inputs.mask].min() > 0  # real losses, not zeros on both sides
    assert out.metrics["weight/selection_ratio"] == pytest.approx(0.7, abs=0.01)


def test_precomputed_column_needs_no_reference_model(micro_model_dir, monkeypatch):
    cfg = _cfg()  # models.reference.path: null
    objective = Rho1Objective(cfg)
    model, tokenizer, _ = objective.build_model()
    batch = _batch(cfg, tokenizer)
    with pytest.raises(ConfigError, match="models.reference.path.*ref-ce"):
        objective(model, batch, training=True)
    seen = _spy(monkeypatch)
    # A reference that is sure of every target: excess = policy CE, the hardest tokens are kept.
    batch["ref_ce"] = torch.zeros(batch["labels"].shape)
    out = objective(model, batch, training=True)
    assert objective.reference.model is None  # no reference model was loaded
    (inputs,) = seen
    kept = out.metrics["weight/selection_ratio"]
    assert kept == pytest.approx(0.7, abs=0.01)
    assert torch.isfinite(out.loss) and out.loss.requires_grad


def test_mismatched_reference_tokenizer_fails_before_training(micro_model_dir, tmp_path):
    from transformers import AutoTokenizer

    import shutil

    other = tmp_path / "other"
    shutil.copytree(micro_model_dir, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<an-extra-token>"])
    tok.save_pretrained(other)
    objective = Rho1Objective(_cfg(**{"models.reference.path": other}))
    with pytest.raises(ConfigError, match=str(other)):
        objective.build_model()


def test_rho1_trains_through_the_loop(tmp_path, micro_model_dir):
    cfg = _cfg(**{"models.reference.path": micro_model_dir, "training.max_steps": 3})
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert result.steps == 3
    assert result.last_train["train/weight/selection_ratio"] == pytest.approx(0.7, abs=0.02)
    assert "train/weight/excess_mean" in result.last_train
    assert "val/ce_head1" in result.last_val
