"""The shipped configs of the weighting comparison differ only in their weights (issue 15):
same data, order, normaliser, budget and model in every arm, and the NTP cells of the 2x2 grid
differ from their MTP cells only in K."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from conftest import REPO
from weighted_mtp.config import load_config

CONFIGS = REPO / "configs"
ARMS = {"baseline": "baseline/baseline.yaml", "critic": "verifiable/verifiable_pairwise.yaml",
        "random_matched": "controls/random_matched.yaml", "shuffled": "controls/shuffled.yaml",
        "rho1": "rho1/rho1.yaml", "combined": "verifiable/verifiable_combined.yaml",
        "critic_frozen": "verifiable/verifiable.yaml"}
# What must not differ between arms: everything but the weighting (and the models it needs).
SHARED_KEYS = ("data_sampling", "dataset", "training.batch_size", "training.learning_rate", "training.max_steps",
               "training.n_epochs", "training.loss", "training.lr_scheduler", "training.gradient_accumulation_steps",
               "training.mixed_precision", "training.weight_decay", "training.max_grad_norm", "models.policy",
               "runtime.seed")
# The same comparison on SmolLM2 (the GPU recipe in the README): no combined / frozen-critic arms.
SMOLLM2_ARMS = {"baseline": "baseline/baseline_smollm2.yaml", "critic": "verifiable/verifiable_pairwise_smollm2.yaml",
                "random_matched": "controls/random_matched_smollm2.yaml",
                "shuffled": "controls/shuffled_smollm2.yaml", "rho1": "rho1/rho1_smollm2.yaml"}
CRITIC_ARMS = ("critic", "random_matched", "shuffled", "combined", "critic_frozen")
# The controls rearrange the critic arm's weights: the same critic, learning exactly as there.
LEARNING_CRITIC_ARMS = ("critic", "random_matched", "shuffled", "combined")


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("arms", [ARMS, SMOLLM2_ARMS], ids=["micro-code", "smollm2"])
def test_shipped_arm_configs_share_everything_but_the_weights(arms):
    cfgs = {arm: load_config(CONFIGS / path) for arm, path in arms.items()}
    for key in SHARED_KEYS:
        values = {arm: repr(_get(cfg, key)) for arm, cfg in cfgs.items()}
        assert len(set(values.values())) == 1, (key, values)
    assert cfgs["baseline"].data_sampling.policy_data == "pairs"
    assert cfgs["baseline"].training.loss.normalization == "weight_mean"
    # the critic arm and its controls share the critic settings too, and state their credit
    for key in ("training.td_gamma", "training.td_lambda", "training.weighting.critic_credit",
                "training.weighting.beta", "training.weighting.min_weight", "training.weighting.max_weight"):
        assert len({repr(_get(cfgs[a], key)) for a in CRITIC_ARMS if a in cfgs}) == 1, key
    for key in ("training.critic_mode", "training.critic_trainable", "training.use_pairwise", "training.value_coef",
                "training.aux_coef", "training.value_head_learning_rate", "training.pairwise_margin",
                "training.weighting.whiten", "training.weighting.stats_momentum",
                "training.weighting.stats_warmup_steps"):
        assert len({repr(_get(cfgs[a], key)) for a in LEARNING_CRITIC_ARMS if a in cfgs}) == 1, key
    for arm in CRITIC_ARMS:
        if arm in arms:
            assert "critic_credit: value_delta" in (CONFIGS / arms[arm]).read_text(), arm


def test_ntp_grid_cells_differ_from_the_mtp_cells_only_in_k():
    for ntp, mtp in (("grid/ntp_uniform.yaml", "baseline/baseline.yaml"),
                     ("grid/ntp_critic.yaml", "verifiable/verifiable_pairwise.yaml")):
        a, b = asdict(load_config(CONFIGS / ntp)), asdict(load_config(CONFIGS / mtp))
        assert a["models"]["policy"].pop("n_future_tokens") == 1 and b["models"]["policy"].pop("n_future_tokens") == 4
        a.pop("experiment"), b.pop("experiment")
        assert a == b, ntp


def test_report_grid_places_runs_by_k_and_weighting(tmp_path):
    from weighted_mtp.report.render import Table, grid_section

    def run(name, stage, scheme, k, ce1):
        from weighted_mtp.report.collect import RunSummary

        return RunSummary(run_dir=tmp_path / name, name=name, stage=stage, scheme=scheme,
                          config={"models": {"policy": {"n_future_tokens": k}}}, steps=1,
                          last={"val/ce_head1": ce1}, history={})

    runs = [run("ntp_u", "baseline", "uniform", 1, 1.5), run("mtp_u", "baseline", "uniform", 4, 1.25),
            run("ntp_w", "verifiable", "critic", 1, 1.75), run("mtp_w", "verifiable", "critic", 4, 2.0)]
    blocks = grid_section(runs, [r.name for r in runs], None)
    (table,) = [b for b in blocks if isinstance(b, Table)]
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["NTP (K=1)"][0].startswith("ntp_u: CE1 1.5") and rows["NTP (K=1)"][1].startswith("ntp_w")
    assert rows["MTP (K=4)"][0].startswith("mtp_u") and rows["MTP (K=4)"][1].startswith("mtp_w: CE1 2")
    assert grid_section(runs[1::2], ["mtp_u", "mtp_w"], None) == []  # one row only: no grid
