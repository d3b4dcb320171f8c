"""Confidence intervals for pass@k, the two ways a comparison of arms can be wrong.

Seeds: the same tasks sampled again with another generation seed; the t-interval over per-seed
means says how much sampling noise moves the number. Tasks: the benchmark is itself a sample of
problems; the bootstrap over tasks says how much another draw of equally hard problems would move
it, which is usually the larger effect at a few hundred tasks. Both are 95% intervals.

Pure numpy (scipy is not a dependency), so the t quantiles are a table."""

from __future__ import annotations

import math

import numpy as np

# Two-sided 95%: the 0.975 quantile of Student's t with df = 1..30 degrees of freedom.
T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
Z_975 = 1.96  # beyond df 30 the normal quantile is within 4% of t's


def t_quantile_975(df: int) -> float:
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T_975[df - 1] if df <= len(T_975) else Z_975


def mean_ci_over_seeds(values, bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, lo, hi): the 95% t-interval of the mean of per-seed values, with the sample
    standard deviation (ddof=1). One seed has no spread to estimate: (value, nan, nan).
    No values: all nan. `bounds` clips the interval to a quantity's range (pass@k: (0, 1)),
    since a symmetric interval around a rate near 0 or 1 runs past it."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan
    half = t_quantile_975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, lo, hi


def bootstrap_ci(per_task, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lo, hi) of the mean over seeds and tasks of `per_task` [n_seeds, n_tasks] (a 1-D
    array is one seed), with a percentile bootstrap over tasks.

    Each resample draws n_tasks tasks with replacement and keeps every seed's value of a drawn
    task together (the same resampled task set across seeds), since seeds of one task are not
    independent of each other. The mean over seeds and tasks of a resample equals the mean of
    the drawn tasks' seed-means, which is what is computed. Deterministic for a given `seed`."""
    x = np.asarray(per_task, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"per_task must be [n_seeds, n_tasks], got shape {x.shape}")
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    task_means = x.mean(axis=0)
    n_tasks = task_means.size
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // n_tasks)  # bounded memory for large benchmarks
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n_tasks, size=(stop - start, n_tasks))
        stats[start:stop] = task_means[idx].mean(axis=1)
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(x.mean()), float(lo), float(hi)
