"""Distribution of the token weights over response tokens, for logging.

Why these numbers: a weighting scheme can quietly degenerate, e.g. a few tokens carrying all the
loss (low effective_token_fraction, high max / p95), or weights piling up at a clip bound. Kish's
effective sample size (sum w)^2 / sum w^2 says how many equally weighted tokens the batch is worth.
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
    n_tokens; plus fraction_at_min / fraction_at_max (share of tokens at or beyond the bound) when
    min_weight / max_weight are given. Distribution stats use the finite weights only, so one inf
    does not hide the rest (nan_weights flags it). Without tokens: nan stats, 0 counts. All values
    are detached float32 scalars on the weights' device.
    """
    dev = weights.device
    w = weights.detach()[mask.bool()].to(torch.float64)
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
    if min_weight is not None:
        out["fraction_at_min"] = float((w <= min_weight).sum()) / n if n else nan
    if max_weight is not None:
        out["fraction_at_max"] = float((w >= max_weight).sum()) / n if n else nan
    return {k: torch.as_tensor(v, dtype=torch.float32).to(dev) for k, v in out.items()}
