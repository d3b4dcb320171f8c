"""The study's numbers from its per-task scores: per arm pass@k with a t-interval over seeds, and
each arm against the baseline arm, paired by task (see `report/paired.py` for the tests).

Input: scores[metric][arm][seed] = {task_id: value}, e.g. metric "greedy pass@1" or "pass@5"
(sampled). Every comparison uses the tasks that every seed of both arms scored, in one order,
and the seeds both arms have; the per-arm rows use every task of each seed's evaluation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from weighted_mtp.jsonl import iter_jsonl
from weighted_mtp.report.paired import CI_NAME, TEST_NAME, compare_paired, holm_adjust, verdict
from weighted_mtp.report.stats import mean_ci_over_seeds
from weighted_mtp.study.evaluation import GREEDY_DIR, SAMPLED_DIR
from weighted_mtp.study.runner import read_json

Scores = dict[str, dict[str, dict[int, dict[str, float]]]]


def read_per_task(bench_dir: Path, seed: int, ks: list[int]) -> dict[str, dict[str, float]]:
    """{"pass@k": {task_id: value}} from one evaluation's seed<S>/per_task.jsonl."""
    out: dict[str, dict[str, float]] = {f"pass@{k}": {} for k in ks}
    for _, row in iter_jsonl(bench_dir / f"seed{seed}" / "per_task.jsonl", "per-task results"):
        for k in ks:
            if f"pass@{k}" in row:
                out[f"pass@{k}"][str(row["task_id"])] = float(row[f"pass@{k}"])
    return out


def collect_scores(run_dirs: dict[str, dict[int, Path]], benchmark: str) -> Scores:
    """Per-task scores of every evaluated (arm, seed): greedy pass@1 from eval/, sampled pass@k
    from eval-sampled/, whichever exist."""
    scores: Scores = {}
    for arm, by_seed in run_dirs.items():
        for seed, run_dir in by_seed.items():
            for sub, prefix in ((GREEDY_DIR, "greedy "), (SAMPLED_DIR, "")):
                bench_dir = run_dir / sub / benchmark
                if not (bench_dir / "summary.json").is_file():
                    continue
                summary = read_json(bench_dir / "summary.json")
                if seed not in summary.get("seeds", []):
                    continue
                for key, values in read_per_task(bench_dir, seed, [int(k) for k in summary["ks"]]).items():
                    scores.setdefault(prefix + key, {}).setdefault(arm, {})[seed] = values
    return scores


def _matrix(by_seed: dict[int, dict[str, float]], seeds: list[int], tasks: list[str]) -> np.ndarray:
    return np.array([[by_seed[s][t] for t in tasks] for s in seeds], dtype=np.float64)


def _arm_row(by_seed: dict[int, dict[str, float]]) -> dict[str, Any]:
    per_seed = {s: float(np.mean(list(v.values()))) for s, v in sorted(by_seed.items()) if v}
    mean, lo, hi = mean_ci_over_seeds(list(per_seed.values()), bounds=(0.0, 1.0))
    return {"per_seed": per_seed, "mean": mean, "ci_lo": lo, "ci_hi": hi,
            "n_tasks": sorted({len(v) for v in by_seed.values()})}


def analyse(scores: Scores, baseline: str, arms: list[str], *, n_boot: int = 10_000, n_resamples: int = 20_000,
            alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """{metric: {"arms": {arm: row}, "vs_baseline": {arm: comparison}}} for every metric scored."""
    out: dict[str, Any] = {}
    for metric, by_arm in scores.items():
        rows = {arm: _arm_row(by_arm[arm]) for arm in arms if arm in by_arm}
        comparisons: dict[str, dict[str, Any]] = {}
        for arm in arms:
            if arm == baseline or arm not in by_arm or baseline not in by_arm:
                continue
            seeds = sorted(set(by_arm[arm]) & set(by_arm[baseline]))
            if not seeds:
                continue
            sets = [set(by_arm[a][s]) for a in (arm, baseline) for s in seeds]
            tasks = sorted(set.intersection(*sets))
            if not tasks:
                continue
            a, b = _matrix(by_arm[arm], seeds, tasks), _matrix(by_arm[baseline], seeds, tasks)
            cmp = compare_paired(a, b, n_boot=n_boot, n_resamples=n_resamples, seed=seed, alpha=alpha).to_dict()
            seed_diffs = (a.mean(axis=1) - b.mean(axis=1)).tolist()
            mean, lo, hi = mean_ci_over_seeds(seed_diffs)
            cmp.update(seeds=seeds, seed_diffs=seed_diffs, seed_diff_ci_lo=lo, seed_diff_ci_hi=hi)
            comparisons[arm] = cmp
        adjusted = holm_adjust([c["p_value"] for c in comparisons.values()])
        for c, p in zip(comparisons.values(), adjusted):
            c["p_holm"] = p
            c["verdict"] = verdict(c["diff"], p, alpha)
        out[metric] = {"arms": rows, "vs_baseline": comparisons}
    return {"metrics": dict(sorted(out.items(), key=lambda kv: _metric_order(kv[0]))),
            "baseline": baseline, "alpha": alpha, "test": TEST_NAME, "interval": CI_NAME,
            "seed_interval": "95% t-interval over seeds of the per-seed values",
            "multiple_comparisons": "Holm step-down over the arms compared with the baseline, per metric",
            "n_boot": n_boot, "n_resamples": n_resamples}


def _metric_order(metric: str) -> tuple[int, int]:
    greedy = metric.startswith("greedy ")
    k = int(metric.rsplit("@", 1)[1]) if "@" in metric else math.inf
    return (0 if greedy else 1, k)
