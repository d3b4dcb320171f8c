"""Distribution of the token weights over response tokens, for logging.

Why these numbers: a weighting scheme can quietly degenerate, e.g. a few tokens carrying all the
loss (low effective_token_fraction, high max / p95), or weights piling up at a clip bound. Kish's
effective sample size (sum w)^2 / sum w^2 says how many equally weighted tokens the batch is worth.
And a weight can encode something other than credit: ``corr_distance_to_end`` (Spearman rank
correlation of weight and tokens-to-end) exposes weights that merely track the position in the
response, as terminal-reward critic weights did (about -0.78 on the quickstart's critic).
"""

from __future__ import annotations

import torch
from torch import Tensor

_QUANTILES = {"p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}


def _quantiles(sorted_x: Tensor, qs: list[float]) -> Tensor:
    """Linear-interpolation quantiles of a sorted 1-D tensor (numpy's default method).

    Hand-rolled because ``torch.quantile`` refuses inputs above 16M elements.
    """
    pos = torch.tensor(qs, dtype=torch.float64, device=sorted_x.device) * (sorted_x.numel() - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    frac = pos - lo
    return sorted_x[lo] + frac * (sorted_x[hi] - sorted_x[lo])


def tokens_to_end(mask: Tensor) -> Tensor:
    """``[B, S]`` long: for each response token, how many response tokens of its row follow it
    (0 on the last one); 0 off the mask."""
    m = mask.bool().long()
    after = m.flip(1).cumsum(1).flip(1) - m
    return after * m


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of a 1-D tensor, ties sharing their average rank (as scipy.stats.rankdata - 1)."""
    sorted_x, order = x.sort(stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    start = counts.cumsum(0) - counts
    avg = start.to(torch.float64) + (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(avg[inverse])
    ranks[order] = avg[inverse]
    return ranks


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (average ranks for ties); nan when either
    is constant or there are fewer than 2 points."""
    if x.numel() < 2:
        return float("nan")
    rx, ry = _average_ranks(x.to(torch.float64)), _average_ranks(y.to(torch.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = (rx.square().sum() * ry.square().sum()).sqrt()
    return float((rx * ry).sum() / den) if float(den) > 0 else float("nan")


@torch.no_grad()
def distance_to_end_correlation(weights: Tensor, mask: Tensor) -> float:
    """Spearman correlation of the weights of the response tokens with their tokens-to-end,
    over all response tokens of the batch; nan for constant weights (uniform) or < 2 tokens."""
    m = mask.bool()
    return spearman(weights.detach()[m].float().cpu(), tokens_to_end(m)[m].cpu())


@torch.no_grad()
def weight_statistics(
    weights: Tensor,
    mask: Tensor,
    *,
    min_weight: float | None = None,
    max_weight: float | None = None,
    extreme: float = 5.0,
) -> dict[str, Tensor]:
    """Summary of ``weights`` ``[B, S]`` over the response tokens ``mask`` ``[B, S]``.

    Keys: mean, std (population, like numpy), p25, p50, p75, p95, max, nan_weights (non-finite
    count), extreme_weights (count > extreme), effective_tokens (Kish), effective_token_fraction,
    n_tokens, corr_distance_to_end (see ``distance_to_end_correlation``); plus fraction_at_min /
    fraction_at_max (share of tokens at or beyond the bound, compared in the weights' own dtype, so
    a float32 weight clamped to 0.1 counts as at 0.1) when min_weight / max_weight are given. Distribution stats use the finite weights only, so one inf
    does not hide the rest (nan_weights flags it). Without tokens: nan stats, 0 counts. All values
    are detached float32 scalars on the weights' device.
    """
    dev = weights.device
    native = weights.detach()[mask.bool()]
    w = native.to(torch.float64)
    finite = torch.isfinite(w)
    x = w[finite]
    n = w.numel()
    out: dict[str, float | Tensor] = {
        "nan_weights": float((~finite).sum()),
        "extreme_weights": float((x > extreme).sum()),
        "n_tokens": float(n),
    }
    nan = float("nan")
    if x.numel() == 0:
        out.update({k: nan for k in ("mean", "std", *_QUANTILES, "max", "effective_token_fraction")})
        out["effective_tokens"] = 0.0
    else:
        sorted_x = x.sort().values
        mean = x.mean()
        out["mean"] = mean
        out["std"] = ((x - mean) ** 2).mean().sqrt()
        out.update(zip(_QUANTILES, _quantiles(sorted_x, list(_QUANTILES.values())), strict=True))
        out["max"] = sorted_x[-1]
        sq = (x * x).sum()
        ess = x.sum() ** 2 / sq if float(sq) > 0 else torch.zeros((), dtype=torch.float64)
        out["effective_tokens"] = ess
        out["effective_token_fraction"] = ess / n
    out["corr_distance_to_end"] = distance_to_end_correlation(weights, mask)
    if min_weight is not None:
        bound = torch.tensor(min_weight, dtype=native.dtype, device=native.device)
        out["fraction_at_min"] = float((native <= bound).sum()) / n if n else nan
    if max_weight is not None:
        bound = torch.tensor(max_weight, dtype=native.dtype, device=native.device)
        out["fraction_at_max"] = float((native >= bound).sum()) / n if n else nan
    return {k: torch.as_tensor(v, dtype=torch.float32).to(dev) for k, v in out.items()}
