"""Running mean and variance of advantages over response tokens, to whiten them.

Why running statistics: exp(A / beta) weights are only comparable across steps if A is on one
scale, and a single batch's mean/std is noisy (a batch of all-correct answers would be re-centred
to look half wrong). The first ``warmup_steps`` updates are an exact running average (new-batch
weight 1/n), so early statistics are not dominated by an arbitrary initial value; after that an
EMA with weight ``momentum`` follows the critic's drift. Only training batches update the
statistics (the caller decides); validation whitens with them unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS = 1e-8


def _moment_sums(x: Tensor, mask: Tensor) -> tuple[float, float, float]:
    """(sum x, sum x^2, count) over masked positions, in float64."""
    m = mask.bool()
    xs = torch.where(m, x.detach().to(torch.float64), torch.zeros((), dtype=torch.float64, device=x.device))
    sums = torch.stack([xs.sum(), (xs * xs).sum(), m.sum().to(torch.float64)])
    # Several processes: each holds a share of the global batch; adding the sums over them gives
    # every process the global batch's statistics, so all whiten identically (and as one
    # process on the whole batch would).
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(sums)
    s, s2, n = sums.tolist()
    return s, s2, n


def _batch_moments(x: Tensor, mask: Tensor) -> tuple[float, float] | None:
    """(mean, population variance) over masked positions, None when there are none."""
    s, s2, n = _moment_sums(x, mask)
    if n == 0:
        return None
    mean = s / n
    return mean, max(s2 / n - mean * mean, 0.0)


class RunningMoments:
    """Running mean/variance of masked values; ``whiten`` maps them to ~zero mean, unit variance."""

    def __init__(self, momentum: float = 0.1, warmup_steps: int = 10):
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.momentum = float(momentum)
        self.warmup_steps = int(warmup_steps)
        self.mean = 0.0
        self.var = 1.0
        self.count = 0  # updates with at least one token

    def update(self, x: Tensor, mask: Tensor) -> None:
        """Fold in this batch's mean and variance over ``mask`` (``[B, S]``); no-op without tokens.

        The n-th update weighs the batch by 1/n while n <= max(warmup_steps, 1), then by momentum:
        the first update always replaces the initial values.
        """
        moments = _batch_moments(x, mask)
        if moments is None:
            return
        self.count += 1
        n = self.count
        alpha = 1.0 / n if n <= max(self.warmup_steps, 1) else self.momentum
        mean, var = moments
        self.mean = (1.0 - alpha) * self.mean + alpha * mean
        self.var = (1.0 - alpha) * self.var + alpha * var

    def whiten(self, x: Tensor, mask: Tensor) -> Tensor:
        """(x - mean) / (std + 1e-8) on the mask, 0 elsewhere, std = sqrt(max(var, 1e-8)).

        Before any update the batch's own statistics are used. Returns x's dtype, no grad.
        """
        m = mask.bool()
        zero = torch.zeros((), dtype=torch.float64, device=x.device)
        if self.count > 0:
            mean, var = self.mean, self.var
        else:
            moments = _batch_moments(x, m)
            if moments is None:
                return torch.zeros_like(x, requires_grad=False)
            mean, var = moments
        std = math.sqrt(max(var, _EPS))
        with torch.no_grad():
            y = (x.detach().to(torch.float64) - mean) / (std + _EPS)
            return torch.where(m, y, zero).to(x.dtype)

    def state_dict(self) -> dict[str, float | int]:
        return {"mean": float(self.mean), "var": float(self.var), "count": int(self.count)}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.mean = float(state["mean"])
        self.var = float(state["var"])
        self.count = int(state["count"])

    def __repr__(self) -> str:
        return f"RunningMoments(mean={self.mean:.4g}, var={self.var:.4g}, count={self.count})"
