"""Per-token loss weights: one contract, six schemes.

Every scheme maps (``WeightingInputs``, ``WeightingContext``) to a ``WeightingResult`` whose
weights are ``[B, S]`` float32 on the mask's device, never require grad (weights scale the loss,
they are not trained through) and are exactly 0 off the response tokens.

- uniform: 1 on every response token (plain MTP fine-tuning).
- critic: exp of the whitened GAE advantage over beta, clipped to [min_weight, max_weight].
- rho1: excess loss against a reference model, hard top-k or soft selection over the batch.
- random_matched / shuffled: controls. They keep the critic weights' statistics (batch mean and
  std; each row's multiset) but break their link to the tokens, so any gain of ``critic`` over
  them is due to *which* tokens get weight, not to the weight distribution.
- combined: critic weight x rho1 weight, renormalised to mean 1 over the batch's response tokens
  (seed 002: does the critic's credit add to Rho-1's selection?).

Random draws come from ``ctx.generator`` on the CPU and are then moved, so a seed gives the same
weights on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from weighted_mtp.weighting.advantage import gae_advantages, td_errors
from weighted_mtp.weighting.config import WeightingConfig
from weighted_mtp.weighting.whitening import RunningMoments


@dataclass
class WeightingInputs:
    mask: Tensor  # [B, S] bool, response target tokens
    values: Tensor | None = None  # [B, S] critic values V(s_t)
    rewards: Tensor | None = None  # [B] terminal reward
    policy_ce: Tensor | None = None  # [B, S] policy's next-token CE of each target token (0 off-mask)
    reference_ce: Tensor | None = None  # [B, S] reference model's CE of the same target token


@dataclass
class WeightingContext:
    cfg: WeightingConfig
    gamma: float = 1.0
    lam: float = 0.95
    stats: RunningMoments | None = None  # critic whitening statistics (owned by the objective)
    training: bool = True  # only training updates `stats`
    generator: torch.Generator | None = None  # CPU generator for random/shuffled draws


@dataclass
class WeightingResult:
    weights: Tensor  # [B, S] float32, on mask's device, no grad, exactly 0 where mask is False
    metrics: dict[str, Tensor] = field(default_factory=dict)  # detached scalars


Weighting = Callable[[WeightingInputs, WeightingContext], WeightingResult]


def _require(scheme: str, inputs: WeightingInputs, *names: str) -> list[Tensor]:
    """The named inputs, detached, checked present and ``[B, S]`` (``[B]`` for rewards)."""
    mask = inputs.mask
    if mask.dim() != 2:
        raise ValueError(f"weighting '{scheme}': mask must be [B, S], got {tuple(mask.shape)}")
    out = []
    for name in names:
        x = getattr(inputs, name)
        if x is None:
            raise ValueError(f"weighting '{scheme}' needs inputs.{name}, which is None")
        want = mask.shape[:1] if name == "rewards" else mask.shape
        if x.shape != want:
            raise ValueError(f"weighting '{scheme}': inputs.{name} must be {tuple(want)}, got {tuple(x.shape)}")
        out.append(x.detach())
    return out


def _masked(x: Tensor, m: Tensor) -> Tensor:
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _mean_std(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population std over masked positions (0, 0 when empty), float64 scalars."""
    xs = _masked(x.to(torch.float64), m)
    n = m.sum().clamp(min=1).to(torch.float64)
    mean = xs.sum() / n
    var = _masked((x.to(torch.float64) - mean) ** 2, m).sum() / n
    return mean, var.sqrt()


def _scalar(x: Tensor | float, device: torch.device) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float32, device=device).detach()


def _cpu_draw(kind: str, shape: torch.Size, ctx: WeightingContext, device: torch.device) -> Tensor:
    fn = torch.randn if kind == "normal" else torch.rand
    return fn(shape, generator=ctx.generator, dtype=torch.float64).to(device)


@torch.no_grad()
def uniform(inputs: WeightingInputs, ctx: WeightingContext) -> WeightingResult:
    """Weight 1 on every response token."""
    _require("uniform", inputs)
    return WeightingResult(inputs.mask.bool().float(), {})


@torch.no_grad()
def critic(inputs: WeightingInputs, ctx: WeightingContext) -> WeightingResult:
    """w = clip(exp(A_hat / beta), min_weight, max_weight) on response tokens.

    A is the GAE advantage; A_hat whitens it with ``ctx.stats`` (updated first on training
    batches), or with this batch's own statistics when there are none; cfg.whiten=False uses A.
    """
    return _critic("critic", inputs, ctx)


def _critic(scheme: str, inputs: WeightingInputs, ctx: WeightingContext) -> WeightingResult:
    """``critic``, with errors naming the scheme that asked for critic weights."""
    values, rewards = _require(scheme, inputs, "values", "rewards")
    cfg, m = ctx.cfg, inputs.mask.bool()
    if cfg.beta <= 0:
        raise ValueError(f"weighting.beta must be > 0, got {cfg.beta}")
    if not 0 <= cfg.min_weight <= cfg.max_weight:
        raise ValueError(f"need 0 <= weighting.min_weight <= max_weight, got {cfg.min_weight}, {cfg.max_weight}")
    credit = cfg.critic_credit
    adv = gae_advantages(values, rewards, m, ctx.gamma, ctx.lam, credit)
    if cfg.whiten:
        if ctx.training and ctx.stats is not None:
            ctx.stats.update(adv, m)
        adv_hat = (ctx.stats if ctx.stats is not None else RunningMoments()).whiten(adv, m)
    else:
        adv_hat = adv
    raw = torch.exp(adv_hat.to(torch.float64) / cfg.beta)
    w = _masked(raw.clamp(cfg.min_weight, cfg.max_weight), m).float()
    n = m.sum().clamp(min=1)
    clipped = m & ((raw <= cfg.min_weight) | (raw >= cfg.max_weight))
    a_mean, a_std = _mean_std(adv, m)
    delta_mean, _ = _mean_std(td_errors(values, rewards, m, ctx.gamma, credit), m)
    dev = m.device
    metrics = {
        "delta_mean": _scalar(delta_mean, dev),
        "advantage_mean": _scalar(a_mean, dev),
        "advantage_std": _scalar(a_std, dev),
        "fraction_clipped": _scalar(clipped.sum() / n, dev),
    }
    return WeightingResult(w, metrics)


def _topk_count(k_percent: float, n: int) -> int:
    """ceil(k_percent * n), robust to float noise (0.07 * 100 = 7.000000000000001 -> 7, not 8)."""
    return min(n, max(0, math.ceil(round(k_percent * n, 6))))


@torch.no_grad()
def rho1(inputs: WeightingInputs, ctx: WeightingContext) -> WeightingResult:
    """Rho-1 selection by excess loss = CE_policy - CE_reference (or its absolute value).

    topk keeps exactly ceil(k_percent * n) of the batch's n response tokens with the largest
    excess (weights 0/1); soft gives w = n * softmax(excess / temperature) over them (mean 1).
    """
    policy_ce, reference_ce = _require("rho1", inputs, "policy_ce", "reference_ce")
    cfg, m = ctx.cfg, inputs.mask.bool()
    excess = policy_ce.to(torch.float64) - reference_ce.to(torch.float64)
    if cfg.rho1_mode == "absolute":
        excess = excess.abs()
    elif cfg.rho1_mode != "signed":
        raise ValueError(f"weighting.rho1_mode must be 'signed' or 'absolute', got {cfg.rho1_mode!r}")
    n = int(m.sum())
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64, device=m.device)
    flat = torch.where(m, excess, neg_inf).flatten()
    if cfg.rho1_selection == "topk":
        if not 0.0 <= cfg.rho1_k_percent <= 1.0:
            raise ValueError(f"weighting.rho1_k_percent must be in [0, 1], got {cfg.rho1_k_percent}")
        k = _topk_count(cfg.rho1_k_percent, n)
        w = torch.zeros_like(flat, dtype=torch.float32)
        w[flat.topk(k).indices] = 1.0
        selected = float(k)
    elif cfg.rho1_selection == "soft":
        if cfg.rho1_temperature <= 0:
            raise ValueError(f"weighting.rho1_temperature must be > 0, got {cfg.rho1_temperature}")
        w = (n * torch.softmax(flat / cfg.rho1_temperature, dim=0)).float() if n else torch.zeros_like(flat).float()
        selected = float(((w >= 1) & m.flatten()).sum())
    else:
        raise ValueError(f"weighting.rho1_selection must be 'topk' or 'soft', got {cfg.rho1_selection!r}")
    w = _masked(w.view_as(m), m)
    excess_mean, _ = _mean_std(excess, m)
    metrics = {
        "selection_ratio": _scalar(selected / n if n else float("nan"), m.device),
        "excess_mean": _scalar(excess_mean, m.device),
    }
    return WeightingResult(w, metrics)


@torch.no_grad()
def random_matched(inputs: WeightingInputs, ctx: WeightingContext) -> WeightingResult:
    """Lognormal noise with exactly the critic weights' batch mean m and std s (then clamped >= 0).

    z ~ lognormal with sigma_ln^2 = ln(1 + s^2 / m^2) has the critic weights' coefficient of
    variation (similar skew); standardising z over the response tokens then pins the mean and std
    exactly. Calls ``critic`` once, so running statistics advance as in the critic arm.
    """
    base = _critic("random_matched", inputs, ctx)
    m = inputs.mask.bool()
    target_mean, target_std = _mean_std(base.weights, m)
    cv2 = float(target_std**2 / target_mean**2) if float(target_mean) > 0 else 0.0
    z = torch.exp(math.sqrt(math.log1p(cv2)) * _cpu_draw("normal", m.shape, ctx, m.device))
    z_mean, z_std = _mean_std(z, m)
    unit = (z - z_mean) / z_std if float(z_std) > 0 else torch.zeros_like(z)
    w = _masked((target_mean + target_std * unit).clamp(min=0.0), m).float()
    metrics = dict(base.metrics)
    metrics["target_mean"] = _scalar(target_mean, m.device)
    metrics["target_std"] = _scalar(target_std, m.device)
    return WeightingResult(w, metrics)


@torch.no_grad()
def shuffled(inputs: WeightingInputs, ctx: WeightingContext) -> WeightingResult:
    """The critic weights randomly permuted among each row's response tokens.

    Keeps every row's multiset of weights (so per-sequence mass is unchanged) and breaks their
    alignment with the tokens. Vectorised: random keys (+inf off the mask) argsorted give a random
    order of each row's response positions; it is scattered onto the positions in natural order.
    """
    base = _critic("shuffled", inputs, ctx)
    m = inputs.mask.bool()
    keys = torch.where(m, _cpu_draw("uniform", m.shape, ctx, m.device), float("inf"))
    source = keys.argsort(dim=1)  # response positions in random order first, then off-mask ones
    target = (~m).to(torch.int8).sort(dim=1, stable=True).indices  # response positions in order first
    w = torch.zeros_like(base.weights).scatter_(1, target, base.weights.gather(1, source))
    return WeightingResult(_masked(w, m), dict(base.metrics))


@torch.no_grad()
def combined(inputs: WeightingInputs, ctx: WeightingContext) -> WeightingResult:
    """critic weight x rho1 weight, scaled so the product has mean 1 over the batch's response tokens.

    The rescaling keeps the combined arm on the uniform arm's overall scale, so it differs from
    the critic and rho1 arms only in which tokens carry the weight. Both parents' metrics are kept
    (critic ones as is, rho1 ones prefixed ``rho1_``)."""
    crit = _critic("combined", inputs, ctx)
    sel = rho1(inputs, ctx)
    m = inputs.mask.bool()
    product = crit.weights.to(torch.float64) * sel.weights.to(torch.float64)
    mean, _ = _mean_std(product, m)
    w = _masked(product / mean if float(mean) > 0 else product, m).float()
    metrics = dict(crit.metrics)
    metrics.update({f"rho1_{k}": v for k, v in sel.metrics.items()})
    return WeightingResult(w, metrics)


WEIGHTINGS: dict[str, Weighting] = {
    "uniform": uniform,
    "critic": critic,
    "rho1": rho1,
    "random_matched": random_matched,
    "shuffled": shuffled,
    "combined": combined,
}
