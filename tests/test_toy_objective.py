"""A method defined outside the package: an objective with its own config section, registered from
this file and trained by the one loop. Nothing under src/ knows about it, which is the contract
for adding a method (see `weighted_mtp.config.registry`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from conftest import REPO, tiny_training_overrides
from tiny_runs import in_process_train, logged

from weighted_mtp.config import load_config
from weighted_mtp.config.load import check
from weighted_mtp.config.registry import METHOD_FIELDS, OBJECTIVES, SECTIONS, register_objective
from weighted_mtp.errors import ConfigError
from weighted_mtp.objectives.base import ObjectiveOutput
from weighted_mtp.objectives.baseline import BaselineObjective

BASELINE = REPO / "configs" / "baseline" / "baseline.yaml"


@dataclass
class ToyConfig:
    """The `toy:` section: the baseline's loss times `scale`."""

    scale: float = 1.0

    def validate(self, source: str) -> None:
        check(self.scale > 0, source, "toy.scale", "must be > 0")


@dataclass
class ToyTrainingFields:
    """A field of the toy's under `training:` (as the critic's `training.td_lambda` is)."""

    toy_warmup_steps: int = 0


class ToyObjective(BaselineObjective):
    def __call__(self, model, batch, *, training: bool) -> ObjectiveOutput:
        out = super().__call__(model, batch, training=training)
        scale = self.cfg.toy.scale
        metrics = {**out.metrics, "loss": out.metrics["loss"] * scale, "toy_scale": torch.tensor(scale)}
        return ObjectiveOutput(loss=out.loss * scale, metrics=metrics, sums=out.sums)


@pytest.fixture
def toy():
    register_objective("toy", section=("toy", ToyConfig), training=(ToyTrainingFields,))(ToyObjective)
    try:
        yield
    finally:
        OBJECTIVES.pop("toy")
        SECTIONS.pop("toy")
        METHOD_FIELDS["training"].remove(ToyTrainingFields)


def test_toy_section_is_parsed_validated_and_suggested(toy, tmp_path):
    cfg = load_config(BASELINE, ["experiment.stage=toy", "toy.scale=2.5"])
    assert cfg.toy.scale == 2.5 and OBJECTIVES[cfg.experiment.stage] is ToyObjective
    assert load_config(BASELINE, ["experiment.stage=toy"]).toy.scale == 1.0  # the section's own default
    cfg = load_config(BASELINE, ["training.toy_warmup_steps=3", "training.batch_size=5"])
    assert cfg.training.toy_warmup_steps == 3 and cfg.training.batch_size == 5  # the toy's field beside the shared ones
    with pytest.raises(ConfigError, match=r"toy\.scale.*must be > 0"):
        load_config(BASELINE, ["toy.scale=0"])
    with pytest.raises(ConfigError, match=r"'toy\.scal'.*did you mean 'toy\.scale'"):
        load_config(BASELINE, ["toy.scal=2"])


def test_toy_objective_trains_through_the_loop(toy, tmp_path, micro_model_dir):
    """Same data, same initial model: the toy's first logged loss is exactly `scale` times the
    baseline's, its per-head CE is the baseline's, and its section reaches the run's config.yaml."""
    runs = {}
    for stage in ("baseline", "toy"):
        cfg = load_config(BASELINE, tiny_training_overrides(**{"experiment.stage": stage, "toy.scale": 3.0,
                                                                "training.max_steps": 1}))
        result = in_process_train(cfg, tmp_path / stage)
        assert result.steps == 1 and result.final_dir is not None
        runs[stage] = logged(tmp_path / stage, "train/")[1]
    base, toy_run = runs["baseline"], runs["toy"]
    assert toy_run["train/loss"] == pytest.approx(3.0 * base["train/loss"], rel=1e-6)
    assert toy_run["train/toy_scale"] == 3.0
    for k in range(1, 5):
        assert toy_run[f"train/ce_head{k}"] == pytest.approx(base[f"train/ce_head{k}"], rel=1e-6)
    saved = load_config(tmp_path / "toy" / "config.yaml")
    assert saved.experiment.stage == "toy" and saved.toy.scale == 3.0
