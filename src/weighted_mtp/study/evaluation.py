"""Evaluate one arm's run of one seed: greedy pass@1, then sampled pass@k at a temperature
chosen on the validation split only (`wmtp eval --select-temperature`, reused as is).

Layout under the arm's run directory:
    eval/<benchmark>/                   greedy, n = 1, T = 0 (where `wmtp report` looks)
    eval-sampled/temperature.json       the validation choice (and select-temperature/ trials)
    eval-sampled/<benchmark>/           n samples per task at that temperature
    study_eval.json                     the settings each finished step ran with, and its cost
                                        (wall and CPU seconds of this process)
A step whose recorded settings equal this call's is skipped, so a rerun evaluates only what is
missing or was asked for differently. The sampling seed of every step is the study seed."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from weighted_mtp.errors import ConfigError
from weighted_mtp.eval.run import EvalSettings, evaluate_checkpoint, resolve_temperature, select_temperature
from weighted_mtp.study.runner import read_json, write_json

EVAL_FILE = "study_eval.json"
GREEDY_DIR, SAMPLED_DIR = "eval", "eval-sampled"


@dataclass(frozen=True)
class StudyEvalSettings:
    benchmark: str = "embedded"
    n: int = 10                          # samples per task for pass@k
    ks: tuple[int, ...] = (1, 5, 10)
    temperatures: tuple[float, ...] = (0.2, 0.6, 1.0)  # candidates, chosen on the validation split
    temperature: float | None = None     # given: no selection
    limit: int | None = None             # first N test tasks (recorded as a subset)
    select_limit: int | None = 50        # first N validation tasks for the temperature choice
    select_n: int | None = None          # samples per validation task (None: n)
    max_new_tokens: int = 256
    top_p: float = 0.95
    workers: int = 2
    timeout_s: float = 5.0
    batch_size: int = 16
    greedy: bool = True
    sampled: bool = True

    def __post_init__(self):
        if self.n < 1 or not self.ks or max(self.ks) > self.n or min(self.ks) < 1:
            raise ConfigError(f"--k {','.join(map(str, self.ks))} needs 1 <= k <= --n ({self.n})")
        if self.temperature is None and (not self.temperatures or min(self.temperatures) <= 0):
            raise ConfigError("--temperatures: candidates must be > 0 (greedy is evaluated on its own)")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError("--temperature: the sampled evaluation needs a temperature > 0")

    def base(self, **changes) -> EvalSettings:
        values = dict(benchmark=self.benchmark, split="test", n=self.n, ks=list(self.ks), top_p=self.top_p,
                      max_new_tokens=self.max_new_tokens, limit=self.limit, workers=self.workers,
                      timeout_s=self.timeout_s, batch_size=self.batch_size)
        values.update(changes)
        return EvalSettings(**values)


@dataclass
class ArmEval:
    greedy: dict[str, Any] | None = None       # summary.json of the greedy evaluation
    sampled: dict[str, Any] | None = None
    temperature: dict[str, Any] | None = field(default=None)  # the validation choice
    evaluated: list[str] = field(default_factory=list)        # steps run by this call


def _plain(settings: EvalSettings) -> dict:
    """The settings that decide an evaluation's results (not how many programs run at once)."""
    return {k: v for k, v in asdict(settings).items() if k not in ("temperature_selected_on", "workers")}


def evaluate_arm(final_dir: Path, run_dir: Path, seed: int, settings: StudyEvalSettings) -> ArmEval:
    record_path = run_dir / EVAL_FILE
    record: dict[str, Any] = read_json(record_path) if record_path.is_file() else {}
    out = ArmEval()

    def done(name: str, wanted: dict, start: float, start_cpu: float) -> None:
        record[name] = wanted
        record.setdefault("cost", {})[name] = {"wall_s": round(time.perf_counter() - start, 1),
                                               "cpu_s": round(time.process_time() - start_cpu, 1)}
        write_json(record_path, record)
        out.evaluated.append(name)

    def step(name: str, wanted: dict, directory: Path, run) -> dict:
        summary_path = directory / "summary.json"
        if record.get(name) == wanted and summary_path.is_file():
            return read_json(summary_path)
        start, start_cpu = time.perf_counter(), time.process_time()
        summary = run()
        done(name, wanted, start, start_cpu)
        return summary

    bench_name = settings.benchmark  # test split: the directory is the benchmark's name
    if settings.greedy:
        greedy = settings.base(n=1, ks=[1], temperature=0.0, seeds=[seed])
        out.greedy = step("greedy", _plain(greedy), run_dir / GREEDY_DIR / bench_name,
                          lambda: evaluate_checkpoint(final_dir, greedy, run_dir / GREEDY_DIR))
    if settings.sampled:
        sampled_root = run_dir / SAMPLED_DIR
        if settings.temperature is None:
            select_n = settings.select_n or settings.n
            trial = EvalSettings(benchmark="embedded", split="valid", n=select_n, ks=[1], top_p=settings.top_p,
                                 seeds=[seed], max_new_tokens=settings.max_new_tokens, limit=settings.select_limit,
                                 workers=settings.workers, timeout_s=settings.timeout_s,
                                 batch_size=settings.batch_size)
            wanted = {**_plain(trial), "candidates": list(settings.temperatures)}
            if not (record.get("select") == wanted and (sampled_root / "temperature.json").is_file()):
                start, start_cpu = time.perf_counter(), time.process_time()
                select_temperature(final_dir, trial, list(settings.temperatures), sampled_root)
                done("select", wanted, start, start_cpu)
            out.temperature = read_json(sampled_root / "temperature.json")
            t, selected_on = resolve_temperature("auto", final_dir, sampled_root)
        else:
            t, selected_on = settings.temperature, None
        sampled = settings.base(temperature=t, seeds=[seed], temperature_selected_on=selected_on)
        out.sampled = step("sampled", _plain(sampled), sampled_root / bench_name,
                           lambda: evaluate_checkpoint(final_dir, sampled, sampled_root))
    return out
