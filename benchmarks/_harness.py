"""Shared by the benchmarks: run each variant in a fresh subprocess and read its peak memory.

A process's peak RSS never goes down and torch's CPU allocations are invisible to tracemalloc,
so variants sharing a process would hide each other's peaks."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def report(result: dict) -> None:
    """Called by a worker: its last stdout line is the result."""
    print(json.dumps(result))


def run_worker(script: str, variant: str, options: dict) -> dict:
    cmd = [sys.executable, script, "--worker", variant]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_comparison(results: dict[str, dict], tokens: int, ours: str, naive: str = "naive") -> None:
    """The table, then the one line of ratios (ours / naive) that every benchmark ends with."""
    print(f"{'variant':<8} {'time_s':>8} {'tokens/s':>10} {'peak_MB':>9}")
    for name, r in results.items():
        print(f"{name:<8} {r['time']:>8.3f} {tokens / r['time']:>10.0f} {r['peak_mb']:>9.1f}")
    mem = results[ours]["peak_mb"] / results[naive]["peak_mb"]
    tim = results[ours]["time"] / results[naive]["time"]
    print(f"ratio_peak_memory={mem:.3f} ratio_time={tim:.3f}")
