"""Read what `wmtp train` and `wmtp eval` left in a run directory into one plain summary.

Only files are read (config.yaml, metrics.jsonl, eval/*/summary.json, per_task.jsonl): no model
is loaded, so a report over many arms stays cheap, and the raw YAML is read rather than the
typed schema, so a run written by an older or newer schema still reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weighted_mtp.errors import DataError, WMTPError


@dataclass
class EvalResult:
    """One benchmark's evaluation of a run. per_task[k] is [n_seeds, n_tasks] of per-task
    pass@k over the tasks every seed scored (in `task_ids` order); empty when the per-task
    files are missing, in which case only the per-seed summary is available."""

    benchmark: str
    summary: dict[str, Any]
    path: Path
    task_ids: list[str] = field(default_factory=list)
    per_task: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def ks(self) -> list[int]:
        return [int(k) for k in self.summary.get("ks") or sorted(int(k) for k in self.summary["pass_at_k"])]

    def per_seed(self, k: int) -> list[float]:
        return [float(v) for v in self.summary["pass_at_k"].get(str(k), [])]


@dataclass
class RunSummary:
    run_dir: Path
    name: str
    stage: str
    scheme: str
    config: dict[str, Any]
    steps: int
    last: dict[str, float]  # the last logged value of every metric key
    history: dict[str, list[tuple[int, float]]]  # key -> [(step, value)] in logging order
    evals: dict[str, EvalResult] = field(default_factory=dict)

    @property
    def final_train(self) -> dict[str, float]:
        return {k: v for k, v in self.last.items() if k.startswith("train/")}

    @property
    def final_val(self) -> dict[str, float]:
        return {k: v for k, v in self.last.items() if k.startswith("val/")}

    def config_value(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of config keys")
    return data


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The logging events of metrics.jsonl. A last line without its newline is a write cut
    short (a run killed mid-write, or still running) and is skipped; any other bad line is an
    error naming path:line."""
    text = path.read_text()
    lines = text.split("\n")
    events = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # no newline after it: an incomplete write
                break
            raise DataError.at(path, i, f"not a JSON object ({e.msg})") from None
        if not isinstance(event, dict) or "step" not in event:
            raise DataError.at(path, i, "expected a JSON object with a 'step'")
        events.append(event)
    return events


def _history(events: list[dict]) -> tuple[dict[str, list[tuple[int, float]]], dict[str, float], int]:
    history: dict[str, list[tuple[int, float]]] = {}
    last: dict[str, float] = {}
    steps = 0
    for event in events:
        step = int(event["step"])
        steps = max(steps, step)
        for key, value in event.items():
            if key == "step" or not isinstance(value, (int, float)):
                continue
            history.setdefault(key, []).append((step, float(value)))
            last[key] = float(value)
    return history, last, steps


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _per_task(bench_dir: Path, summary: dict, ks: list[int]) -> tuple[list[str], dict[int, np.ndarray]]:
    """Per-seed per-task pass@k, aligned on the tasks every seed has (a partial seed must not
    shift tasks between columns)."""
    rows_by_seed = []
    for seed in summary.get("seeds") or []:
        path = bench_dir / f"seed{seed}" / "per_task.jsonl"
        if not path.is_file():
            return [], {}
        rows = {}
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows[str(row["task_id"])] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError.at(path, i, "expected a JSON object with a 'task_id'") from None
        rows_by_seed.append(rows)
    if not rows_by_seed:
        return [], {}
    common = set(rows_by_seed[0]).intersection(*rows_by_seed[1:])
    task_ids = [t for t in rows_by_seed[0] if t in common]
    matrices = {}
    for k in ks:
        key = f"pass@{k}"
        if all(key in rows[t] for rows in rows_by_seed for t in task_ids):
            matrices[k] = np.array([[float(rows[t][key]) for t in task_ids] for rows in rows_by_seed])
    return task_ids, matrices


def collect_evals(run_dir: Path) -> dict[str, EvalResult]:
    """Every `eval/<benchmark>/summary.json` of a run, by benchmark directory name."""
    evals: dict[str, EvalResult] = {}
    root = run_dir / "eval"
    if not root.is_dir():
        return evals
    for bench_dir in sorted(p for p in root.iterdir() if (p / "summary.json").is_file()):
        path = bench_dir / "summary.json"
        summary = _read_json(path)
        if not isinstance(summary, dict) or not isinstance(summary.get("pass_at_k"), dict):
            raise DataError(f"{path}: expected an evaluation summary with a 'pass_at_k' mapping")
        result = EvalResult(benchmark=bench_dir.name, summary=summary, path=path)
        result.task_ids, result.per_task = _per_task(bench_dir, summary, result.ks)
        evals[bench_dir.name] = result
    return evals


def collect_run(run_dir: str | Path) -> RunSummary:
    """Everything a report shows about one run, from its files."""
    run_dir = Path(run_dir)
    missing = [f for f in ("config.yaml", "metrics.jsonl") if not (run_dir / f).is_file()]
    if missing:
        raise WMTPError(f"{run_dir} is not a wmtp run directory (no {' or '.join(missing)}); "
                        "pass directories written by `wmtp train`")
    config = _read_yaml(run_dir / "config.yaml")
    history, last, steps = _history(read_metrics(run_dir / "metrics.jsonl"))
    experiment = config.get("experiment") or {}
    weighting = (config.get("training") or {}).get("weighting") or {}
    return RunSummary(
        run_dir=run_dir,
        name=str(experiment.get("name") or run_dir.resolve().name),
        stage=str(experiment.get("stage", "baseline")),
        scheme=str(weighting.get("scheme", "uniform")),
        config=config,
        steps=steps,
        last=last,
        history=history,
        evals=collect_evals(run_dir),
    )


def unique_names(runs: list[RunSummary]) -> list[str]:
    """Arm labels for tables and file names: experiment.name, with the directory name added
    where two runs share a name (e.g. two seeds of one config), and a counter as a last resort."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    labels = [r.name if counts[r.name] == 1 else f"{r.name} ({r.run_dir.resolve().name})" for r in runs]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out
