"""Paired comparison of two arms on the same tasks: is arm A's pass@k different from arm B's?

Both arms are scored on the same benchmark tasks, so the comparison is paired by task: a task
that is easy for one arm is usually easy for the other, and pairing removes that shared
difficulty from the noise. Seeds are averaged per task first (each arm's per-task value is the
mean over its seeds), which leaves one difference d_i per task.

- Interval: a paired percentile bootstrap over tasks. Each resample draws n tasks with
  replacement and uses the *same* drawn tasks for both arms, so it is the bootstrap of mean(d).
- p-value: a two-sided sign-flip permutation test over tasks. Under H0 ("the arm labels are
  exchangeable within a task") each d_i is as likely to be -d_i, so the null distribution of
  sum(d) comes from flipping signs. Tasks with d_i = 0 do not move the sum; with m non-zero
  differences the 2^m flips are enumerated exactly when m <= EXACT_MAX_FLIPS, otherwise sampled
  (Monte Carlo p = (1 + hits) / (1 + draws), never 0).
- Several arms against one baseline: Holm's step-down adjustment of their p-values controls the
  family-wise error rate without assuming independence.

Pure numpy; deterministic for a given `seed`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from weighted_mtp.report.stats import bootstrap_ci

EXACT_MAX_FLIPS = 16  # 2^16 sign patterns enumerated exactly; beyond that, sampled
TEST_NAME = "two-sided sign-flip permutation test over tasks (seed-averaged per-task differences)"
CI_NAME = "paired percentile bootstrap over tasks (the same resampled tasks for both arms)"


def task_means(per_task) -> np.ndarray:
    """[n_tasks] mean over seeds of a [n_seeds, n_tasks] array (a 1-D array is one seed)."""
    x = np.asarray(per_task, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"per-task values must be [n_seeds, n_tasks], got shape {x.shape}")
    return x.mean(axis=0)


def paired_differences(a, b) -> np.ndarray:
    """Per-task difference of seed means, arm a minus arm b; both on the same tasks in the same
    order (the number of seeds may differ)."""
    ma, mb = task_means(a), task_means(b)
    if ma.shape != mb.shape:
        raise ValueError(f"paired arms must be scored on the same tasks: {ma.size} tasks vs {mb.size}")
    return ma - mb


def sign_flip_p_value(diffs, n_resamples: int = 20_000, seed: int = 0) -> float:
    """Two-sided p-value of mean(diffs) != 0 by flipping the signs of the per-task differences.

    Exact over all 2^m sign patterns of the m non-zero differences when m <= EXACT_MAX_FLIPS
    (the identity pattern included, so p >= 2 / 2^m); otherwise a Monte Carlo estimate
    (1 + hits) / (1 + n_resamples). No non-zero difference: p = 1."""
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("paired differences must be finite")
    d = d[d != 0]
    m = d.size
    if m == 0:
        return 1.0
    observed = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))  # equal sums computed in another order
    if m <= EXACT_MAX_FLIPS:
        patterns = ((np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1) * 2 - 1
        sums = np.abs(patterns @ d)
        return float(np.count_nonzero(sums >= observed - tol)) / sums.size
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, 2_000_000 // m)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        signs = rng.integers(0, 2, size=(size, m)) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_resamples)


def holm_adjust(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: sorted ascending, the i-th
    (0-based) of m is multiplied by m - i, then made non-decreasing and capped at 1."""
    p = [float(x) for x in p_values]
    m = len(p)
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class PairedComparison:
    """Arm a against arm b on n_tasks shared tasks (values are pass@k fractions)."""

    n_tasks: int
    mean_a: float
    mean_b: float
    diff: float            # mean over tasks of (a - b), seeds averaged per task
    ci_lo: float           # paired bootstrap interval of diff
    ci_hi: float
    p_value: float         # sign-flip permutation test
    n_a_better: int        # tasks where a's seed-mean is higher
    n_b_better: int
    alpha: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


def compare_paired(a, b, *, n_boot: int = 10_000, n_resamples: int = 20_000, seed: int = 0,
                   alpha: float = 0.05) -> PairedComparison:
    """The paired difference a - b with its bootstrap interval and permutation p-value."""
    d = paired_differences(a, b)
    if d.size == 0:
        raise ValueError("no shared tasks to compare")
    diff, lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed, alpha=alpha)
    return PairedComparison(n_tasks=int(d.size), mean_a=float(task_means(a).mean()),
                            mean_b=float(task_means(b).mean()), diff=diff, ci_lo=lo, ci_hi=hi,
                            p_value=sign_flip_p_value(d, n_resamples=n_resamples, seed=seed),
                            n_a_better=int(np.count_nonzero(d > 0)), n_b_better=int(np.count_nonzero(d < 0)),
                            alpha=alpha)


def verdict(diff: float, p_adjusted: float, alpha: float = 0.05) -> str:
    """The words a report uses: a difference is claimed only when the adjusted p is below alpha."""
    if not math.isfinite(p_adjusted) or p_adjusted >= alpha:
        return "no significant difference"
    return "significantly higher" if diff > 0 else "significantly lower"
