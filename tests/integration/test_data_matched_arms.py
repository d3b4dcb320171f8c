"""The arms of the weighting comparison differ only in their weights (issue 15): the uniform
baseline, the critic arm, both controls and Rho-1, from their shipped configs, train on the same
rows in the same order with the same loss normaliser, and the critic arm's validation reports
the critic on held-out pairs."""

from __future__ import annotations

import pytest

from conftest import REPO, tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.objectives import OBJECTIVES
from weighted_mtp.objectives.base import policy_rows
from weighted_mtp.training.loop import train

CONFIGS = REPO / "configs"
ARMS = {"baseline": "baseline/baseline.yaml", "critic": "verifiable/verifiable_pairwise.yaml",
        "random_matched": "controls/random_matched.yaml", "shuffled": "controls/shuffled.yaml",
        "rho1": "rho1/rho1.yaml", "combined": "verifiable/verifiable_combined.yaml"}
@pytest.fixture(scope="module")
def critic_dir(micro_model_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("critic") / "run"
    cfg = load_config(CONFIGS / "critic" / "critic_pairwise.yaml", tiny_training_overrides(**{
        "training.max_steps": 2, "data_sampling.pairwise.n_pairs": 8, "data_sampling.pairwise.val_n_pairs": 4,
        "data_sampling.train_eval_n_samples": 0}))
    train(cfg, run, show_progress=False)
    return run / "final"


def test_five_steps_of_each_arm_see_the_same_rows_in_the_same_order(critic_dir, micro_model_dir, tmp_path,
                                                                     monkeypatch):
    seen: dict[str, list] = {}
    normaliser: dict[str, str] = {}
    current = {"arm": None}

    def spy(cls):
        original = cls.__call__

        def call(self, model, batch, *, training):
            if training:
                seen[current["arm"]].append(list(policy_rows(batch)["task_ids"]))
                normaliser[current["arm"]] = self.cfg.training.loss.normalization
            return original(self, model, batch, training=training)

        monkeypatch.setattr(cls, "__call__", call)

    for cls in {OBJECTIVES[s] for s in ("baseline", "verifiable", "rho1")}:
        spy(cls)
    for arm, path in ARMS.items():
        current["arm"], seen[arm] = arm, []
        cfg = load_config(CONFIGS / path, tiny_training_overrides(**{
            "training.max_steps": 5, "training.eval_every": 0, "checkpoint.save_checkpoint_every": 0,
            "checkpoint.save_best": False, "models.critic.path": critic_dir,
            "models.reference.path": micro_model_dir}))
        result = train(cfg, tmp_path / arm, show_progress=False)
        assert result.steps == 5
        if arm in ("critic", "random_matched", "shuffled", "combined"):
            corr = result.last_train["train/weight/corr_distance_to_end"]
            assert -1.0 <= corr <= 1.0
        if arm == "critic":  # the critic on held-out pairs, from the verifiable stage's validation
            for key in ("val/pairwise_accuracy", "val/pairwise_margin", "val/value_loss"):
                assert key in result.last_val, key
            assert 0.0 <= result.last_val["val/pairwise_accuracy"] <= 1.0
    assert len(seen["baseline"]) == 5 and all(len(b) == 4 for b in seen["baseline"])
    for arm in ARMS:
        assert seen[arm] == seen["baseline"], arm
        assert normaliser[arm] == "weight_mean", arm
