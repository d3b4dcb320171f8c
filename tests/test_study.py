"""`wmtp study` without training: the plan's stage DAG, and the analysis and report read from
hand-made evaluation files with hand-computed numbers. The tiny study end to end (training,
evaluation, resumability) is tests/integration/test_study_pipeline.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from weighted_mtp.errors import ConfigError
from weighted_mtp.study.evaluation import StudyEvalSettings
from weighted_mtp.study.plan import CRITIC_STAGE, plan_study, stage_overrides
from weighted_mtp.study.run import write_report

CONFIGS = REPO / "configs"


def test_default_plan_wires_critic_and_reference():
    plan = plan_study([], CONFIGS)
    assert plan.arms == ["uniform", "critic", "random_matched", "shuffled", "rho1"]
    assert plan.baseline == "uniform"
    names = [s.name for s in plan.stages]
    assert names == ["uniform", CRITIC_STAGE, "critic", "random_matched", "shuffled", "rho1"]
    assert plan.stage(CRITIC_STAGE).links == (("models.policy.path", "uniform"),)
    for arm in ("critic", "random_matched", "shuffled"):
        assert plan.stage(arm).links == (("models.critic.path", CRITIC_STAGE),)
    assert plan.stage("rho1").links == (("models.reference.path", "uniform"),)
    finals = {name: Path(f"/runs/seed2/{name}/final") for name in names}
    assert stage_overrides(plan, plan.stage("rho1"), 2, finals) == [
        "runtime.seed=2", "data_sampling.seed=2", "models.reference.path=/runs/seed2/uniform/final"]
    for i, stage in enumerate(plan.stages):  # every stage follows what it needs
        assert all(names.index(dep) < i for dep in stage.needs)


def test_plan_adds_the_baseline_and_names_arms(tmp_path):
    plan = plan_study([str(CONFIGS / "rho1" / "rho1.yaml"), f"mine={CONFIGS / 'controls' / 'shuffled.yaml'}"],
                      CONFIGS, overrides=["training.max_steps=3"])
    assert plan.arms == ["uniform", "rho1", "mine"] and plan.overrides == ("training.max_steps=3",)
    with pytest.raises(ConfigError, match="named 'rho1'"):
        plan_study([str(CONFIGS / "rho1" / "rho1.yaml")] * 2, CONFIGS)
    with pytest.raises(ConfigError, match="--critic-config"):
        plan_study([str(CONFIGS / "critic" / "critic_pairwise.yaml")], CONFIGS)
    with pytest.raises(ConfigError, match="not found"):
        plan_study([str(tmp_path / "missing.yaml")], CONFIGS)
    # The combined weighting needs both the critic and the baseline as its reference.
    plan = plan_study([str(CONFIGS / "verifiable" / "verifiable_combined.yaml")], CONFIGS)
    assert plan.stage("combined").links == (("models.critic.path", CRITIC_STAGE),
                                            ("models.reference.path", "uniform"))
    # A rho1 arm that already names its reference needs nothing from the baseline.
    plan = plan_study([str(CONFIGS / "rho1" / "rho1.yaml")], CONFIGS, overrides=["models.reference.path=/ref"])
    assert plan.stage("rho1").links == ()




def _fake_eval(bench_dir: Path, seed: int, values: dict[str, list[float]], temperature: float, n: int) -> None:
    """An evaluation as `wmtp eval` writes it: summary.json and seed<S>/per_task.jsonl."""
    ks = [int(k.split("@")[1]) for k in values]
    (bench_dir / f"seed{seed}").mkdir(parents=True)
    rows = [{"task_id": f"t{i}", "n": n, **{k: v[i] for k, v in values.items()}} for i in range(4)]
    (bench_dir / f"seed{seed}" / "per_task.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"seeds": [seed], "ks": ks, "n": n, "temperature": temperature, "seconds": 2.5,
               "n_tasks": 4, "n_tasks_total": 200, "subset": True,
               "pass_at_k": {str(k): [sum(values[f"pass@{k}"]) / 4] for k in ks}}
    (bench_dir / "summary.json").write_text(json.dumps(summary))


# Greedy pass@1 per task (4 tasks) for seeds 0 and 1.
GREEDY = {"uniform": {0: [1, 0, 0, 0], 1: [1, 1, 0, 0]}, "rho1": {0: [1, 1, 1, 0], 1: [1, 1, 0, 0]}}


def test_report_numbers_from_evaluation_files(tmp_path):
    plan = plan_study([str(CONFIGS / "rho1" / "rho1.yaml")], CONFIGS)
    for arm, by_seed in GREEDY.items():
        for seed, greedy in by_seed.items():
            run = tmp_path / f"seed{seed}" / arm
            _fake_eval(run / "eval" / "embedded", seed, {"pass@1": greedy}, 0.0, 1)
            _fake_eval(run / "eval-sampled" / "embedded", seed, {"pass@1": [0.0] * 4, "pass@2": [1.0] * 4}, 0.6, 2)
            (run / "study_complete.json").write_text(json.dumps({"steps": 3, "seconds": 10.0 + seed,
                                                                 "cpu_seconds": 15.0,
                                                                 "last_val": {"val/loss": 2.0 + seed}}))
            (run / "study_eval.json").write_text(json.dumps({"cost": {"greedy": {"wall_s": 2.0, "cpu_s": 3.0},
                                                                      "sampled": {"wall_s": 0.5, "cpu_s": 1.0}}}))
    settings = StudyEvalSettings(n=2, ks=(1, 2))
    md, js, analysis = write_report(plan, [0, 1], tmp_path, settings, "wmtp study test", n_boot=500)

    greedy = analysis["metrics"]["greedy pass@1"]
    # Per-seed means: uniform 0.25, 0.5; rho1 0.75, 0.5. Means over seeds 0.375 and 0.625.
    assert greedy["arms"]["uniform"]["per_seed"] == {0: 0.25, 1: 0.5}
    assert greedy["arms"]["rho1"]["mean"] == pytest.approx(0.625)
    # t-interval over 2 seeds: 0.375 +- 12.7062 * 0.125, clipped to [0, 1].
    assert (greedy["arms"]["uniform"]["ci_lo"], greedy["arms"]["uniform"]["ci_hi"]) == (0.0, 1.0)
    c = greedy["vs_baseline"]["rho1"]
    # Task seed-means: uniform 1, .5, 0, 0; rho1 1, 1, .5, 0 -> differences 0, .5, .5, 0, mean .25.
    # Sign flips of the two non-zero .5: sums 1, 0, 0, -1 -> p = 2/4. One arm: Holm p = p.
    assert c["diff"] == pytest.approx(0.25) and c["p_value"] == pytest.approx(0.5) and c["p_holm"] == 0.5
    assert (c["n_a_better"], c["n_b_better"], c["n_tasks"]) == (2, 0, 4)
    assert c["seed_diffs"] == pytest.approx([0.5, 0.0]) and c["verdict"] == "no significant difference"
    assert 0.0 <= c["ci_lo"] <= 0.25 <= c["ci_hi"] <= 0.5
    # Sampled: identical arms, difference 0, p = 1.
    assert analysis["metrics"]["pass@2"]["vs_baseline"]["rho1"]["p_value"] == 1.0
    assert list(analysis["metrics"]) == ["greedy pass@1", "pass@1", "pass@2"]

    report = json.loads(js.read_text())
    assert report["study"]["temperatures"] == {"uniform": {"0": 0.6, "1": 0.6}, "rho1": {"0": 0.6, "1": 0.6}}
    assert report["study"]["val_loss"]["rho1"] == {"0": 2.0, "1": 3.0}
    cost = report["study"]["cost"]
    assert (cost["train_wall_s"], cost["train_cpu_s"]) == pytest.approx((42.0, 60.0))  # 10+11 per arm; 4 x 15
    assert (cost["eval_wall_s"], cost["eval_cpu_s"]) == pytest.approx((4 * 2.5, 4 * 4.0))
    assert cost["eval"]["1"] == {"wall_s": 5.0, "cpu_s": 8.0}
    text = md.read_text()
    assert "greedy pass@1, rho1 - uniform: +0.250" in text and "p = 0.500" in text
    assert "no significant difference" in text and "| uniform |" in text
    assert "(the first 4 of 200 test problems, unseen by every stage)" in text
    assert "| rho1 | arm |" in text and "models.reference.path <- uniform/final" in text
    lines = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("- ")}
    assert "carries no information" in lines["- pass@1, rho1 - uniform"]  # 0 for both arms on every task
    assert "carries no information" not in lines["- pass@2, rho1 - uniform"]
    assert "carries no information" not in lines["- greedy pass@1, rho1 - uniform"]


def test_config_difference_names_the_key_and_skips_bookkeeping():
    from weighted_mtp.study.runner import UNCHECKED_KEYS, first_difference

    old = {"training": {"learning_rate": 0.002, "log_interval": 10}, "mlflow": {"enabled": True}}
    assert first_difference(old, old) is None
    new = {"training": {"learning_rate": 0.001, "log_interval": 1}, "mlflow": {"enabled": False}}
    assert first_difference(old, new, ignore=UNCHECKED_KEYS) == ("training.learning_rate", 0.002, 0.001)
    new["training"]["learning_rate"] = 0.002
    assert first_difference(old, new, ignore=UNCHECKED_KEYS) is None
    assert first_difference(old, new) == ("mlflow.enabled", True, False)
    assert first_difference({"a": {"b": 1}}, {"a": {}}) == ("a.b", 1, None)
