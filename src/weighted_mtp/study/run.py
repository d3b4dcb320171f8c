"""`wmtp study`: every stage of the plan for every seed, each arm evaluated, one report.

Seed by seed (so one seed's full comparison exists before the next starts): the stages in plan
order (training resumable and skipped when done, see `runner.py`), then each arm's evaluation
(skipped when done, see `evaluation.py`), then the report is rewritten with every seed finished
so far. Layout under the output directory:
    study.json                 the plan and settings of the last call
    seed<S>/<stage>/           one run directory per stage and seed
    report/study.{md,html,json}"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from weighted_mtp.config import load_config
from weighted_mtp.errors import ConfigError
from weighted_mtp.study.analysis import analyse, collect_scores
from weighted_mtp.study.evaluation import EVAL_FILE, GREEDY_DIR, SAMPLED_DIR, StudyEvalSettings, evaluate_arm
from weighted_mtp.study.plan import StudyPlan, describe, stage_overrides
from weighted_mtp.study.report import write_study_report
from weighted_mtp.study.runner import COMPLETE_FILE, read_json, run_stage, write_json

DEFAULT_EMBEDDED = (0, 2000)  # dataset.embedded (seed, n_problems) whose test split `wmtp eval` scores


@dataclass
class StudyResult:
    output_dir: Path
    report_md: Path
    report_json: Path
    trained: list[str]       # "seed<S>/<stage>" trained (or resumed) by this call
    evaluated: list[str]     # "seed<S>/<arm>:<step>" evaluated by this call
    analysis: dict[str, Any]


def _check_eval_data(plan: StudyPlan, settings: StudyEvalSettings) -> None:
    """The embedded benchmark is the default embedded dataset's held-out split; an arm trained
    on another embedded dataset would be scored on problems from a different draw."""
    if settings.benchmark != "embedded":
        return
    for stage in plan.stages:
        cfg = load_config(stage.config, list(plan.overrides))
        emb = cfg.dataset.embedded
        if cfg.dataset.train.startswith("embedded:") and (emb.seed, emb.n_problems) != DEFAULT_EMBEDDED:
            raise ConfigError(f"{stage.config}: dataset.embedded is seed {emb.seed}, {emb.n_problems} problems; the "
                              f"embedded benchmark scores the default dataset's (seed {DEFAULT_EMBEDDED[0]}, "
                              f"{DEFAULT_EMBEDDED[1]} problems) held-out split")


def _eval_cost(run_dir: Path) -> dict[str, float]:
    """Wall and CPU seconds of an arm's evaluation steps, as `evaluation.py` recorded them."""
    path = run_dir / EVAL_FILE
    steps = (read_json(path).get("cost") or {}) if path.is_file() else {}
    return {key: sum(float(c.get(key, 0.0)) for c in steps.values()) for key in ("wall_s", "cpu_s")}


def _tasks_text(output_dir: Path, plan: StudyPlan, seeds: list[int], settings: StudyEvalSettings) -> str:
    """"the first 50 of 200 test problems" / "200 test problems", from an evaluation summary."""
    where = "unseen by every stage" if settings.benchmark == "embedded" else "held out"
    for seed in seeds:
        for sub in (GREEDY_DIR, SAMPLED_DIR):
            path = output_dir / f"seed{seed}" / plan.baseline / sub / settings.benchmark / "summary.json"
            if path.is_file():
                s = read_json(path)
                first = f"the first {s['n_tasks']} of " if s.get("subset") else ""
                return f"{first}{s['n_tasks_total']} test problems, {where}"
    return f"test problems, {where}"


def study_summary(plan: StudyPlan, seeds: list[int], output_dir: Path, settings: StudyEvalSettings,
                  command: str) -> dict[str, Any]:
    """What the report says about the study itself, read from the run directories."""
    train_cost: dict[str, dict[str, dict[str, float]]] = {}
    eval_cost: dict[str, dict[str, float]] = {}
    temperatures: dict[str, dict[str, float]] = {}
    val_loss: dict[str, dict[str, float]] = {}
    for seed in seeds:
        for stage in plan.stages:
            run_dir = output_dir / f"seed{seed}" / stage.name
            if not (run_dir / COMPLETE_FILE).is_file():
                continue
            done = read_json(run_dir / COMPLETE_FILE)
            train_cost.setdefault(stage.name, {})[str(seed)] = {"wall_s": float(done.get("seconds", 0.0)),
                                                                "cpu_s": float(done.get("cpu_seconds", 0.0))}
            if stage.is_arm:
                total = eval_cost.setdefault(str(seed), {"wall_s": 0.0, "cpu_s": 0.0})
                for key, value in _eval_cost(run_dir).items():
                    total[key] += value
                if "val/loss" in done.get("last_val", {}):
                    val_loss.setdefault(stage.name, {})[str(seed)] = float(done["last_val"]["val/loss"])
                sampled = run_dir / SAMPLED_DIR / settings.benchmark / "summary.json"
                if sampled.is_file():
                    temperatures.setdefault(stage.name, {})[str(seed)] = float(read_json(sampled)["temperature"])
    cost = {"train": train_cost, "eval": eval_cost}
    for key in ("wall_s", "cpu_s"):
        cost[f"train_{key}"] = sum(c[key] for by_seed in train_cost.values() for c in by_seed.values())
        cost[f"eval_{key}"] = sum(c[key] for c in eval_cost.values())
    return {
        "arms": plan.arms, "baseline": plan.baseline, "seeds": seeds, "benchmark": settings.benchmark,
        "eval_settings": asdict(settings), "command": command, "plan": describe(plan, seeds),
        "stages": [{"name": s.name, "config": str(s.config), "arm": s.is_arm, "links": [list(x) for x in s.links]}
                   for s in plan.stages],
        "overrides": list(plan.overrides), "output_dir": str(output_dir),
        "cost": cost,
        "temperatures": temperatures, "val_loss": val_loss,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch threads {_threads()}",
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def write_report(plan: StudyPlan, seeds: list[int], output_dir: Path, settings: StudyEvalSettings, command: str,
                 *, n_boot: int = 10_000, n_resamples: int = 20_000) -> tuple[Path, Path, dict[str, Any]]:
    run_dirs = {arm: {s: output_dir / f"seed{s}" / arm for s in seeds} for arm in plan.arms}
    analysis = analyse(collect_scores(run_dirs, settings.benchmark), plan.baseline, plan.arms,
                       n_boot=n_boot, n_resamples=n_resamples)
    study = study_summary(plan, seeds, output_dir, settings, command)
    study["tasks_text"] = _tasks_text(output_dir, plan, seeds, settings)
    md, _, js = write_study_report(output_dir, study, analysis)
    return md, js, analysis


def run_study(plan: StudyPlan, seeds: list[int], output_dir: str | Path, settings: StudyEvalSettings, *,
              evaluate: bool = True, show_progress: bool = True, command: str | None = None,
              n_boot: int = 10_000, n_resamples: int = 20_000) -> StudyResult:
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct, got {seeds}")
    output_dir = Path(output_dir).resolve()  # stage links are absolute paths recorded in configs
    command = command or "wmtp " + " ".join(sys.argv[1:])
    if evaluate:
        _check_eval_data(plan, settings)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "study.json", {"plan": describe(plan, seeds), "seeds": seeds, "command": command,
                                           "eval_settings": asdict(settings), "overrides": list(plan.overrides)})
    print(describe(plan, seeds), flush=True)
    trained, evaluated = [], []
    report_md = report_json = output_dir / "report" / "study.md"
    analysis: dict[str, Any] = {}
    for seed in seeds:
        finals: dict[str, Path] = {}
        for stage in plan.stages:
            run_dir = output_dir / f"seed{seed}" / stage.name
            cfg = load_config(stage.config, stage_overrides(plan, stage, seed, finals))
            start = time.perf_counter()
            outcome = run_stage(cfg, run_dir, show_progress=show_progress)
            finals[stage.name] = outcome.final_dir
            if outcome.trained:
                trained.append(f"seed{seed}/{stage.name}")
                print(f"seed {seed} {stage.name}: trained {outcome.steps} steps in "
                      f"{time.perf_counter() - start:.0f} s ({run_dir})", flush=True)
            else:
                print(f"seed {seed} {stage.name}: done earlier, skipped ({run_dir})", flush=True)
        if evaluate:
            for arm in plan.arms:
                run_dir = output_dir / f"seed{seed}" / arm
                result = evaluate_arm(finals[arm], run_dir, seed, settings)
                evaluated += [f"seed{seed}/{arm}:{step}" for step in result.evaluated]
                parts = []
                if result.greedy:
                    parts.append(f"greedy pass@1 {result.greedy['pass_at_k']['1'][0]:.3f}")
                if result.sampled:
                    parts.append(f"T={result.sampled['temperature']:g} " + ", ".join(
                        f"pass@{k} {v[0]:.3f}" for k, v in result.sampled["pass_at_k"].items()))
                print(f"seed {seed} {arm}: {'; '.join(parts)}"
                      + ("" if result.evaluated else " (evaluated earlier)"), flush=True)
        report_md, report_json, analysis = write_report(plan, seeds, output_dir, settings, command,
                                                        n_boot=n_boot, n_resamples=n_resamples)
    return StudyResult(output_dir, report_md, report_json, trained, evaluated, analysis)
