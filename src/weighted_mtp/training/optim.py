"""AdamW with one parameter group per part of the model (trunk, MTP heads, value head, objective
parameters), each with its own learning rate, and a warmup + cosine/linear schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from weighted_mtp.config.schema import TrainingConfig
from weighted_mtp.models.hf_layout import find_layout


def parameter_groups(model: nn.Module, cfg: TrainingConfig, extra: list[nn.Parameter] = ()) -> list[dict]:
    """Head 1 (the LM's last block) and heads 2..K share the heads LR; norms, biases and other
    1-D parameters get no weight decay. Frozen parameters are left out."""
    head_ids = {id(p) for p in getattr(model, "extra_heads", nn.ModuleList()).parameters()}
    lm = getattr(model, "lm", None)
    if lm is not None:  # an MTP policy: head 1 is the LM's last block (a critic has no LM head)
        head_ids |= {id(p) for p in find_layout(lm).layers[-1].parameters()}
    value_head = getattr(model, "value_head", None)
    value_ids = {id(p) for p in value_head.parameters()} if value_head is not None else set()
    def lr(value: float | None) -> float:  # 0.0 is a real choice (a frozen part), only None defaults
        return cfg.learning_rate if value is None else value

    lrs = {
        "trunk": lr(cfg.trunk_learning_rate),
        "heads": lr(cfg.heads_learning_rate),
        "value_head": lr(cfg.value_head_learning_rate),
        "objective": lr(cfg.objective_learning_rate),
    }
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    named = [(n, p) for n, p in model.named_parameters()]
    for i, item in enumerate(extra):  # a Parameter, or (group, Parameter)
        part, param = item if isinstance(item, tuple) else ("objective", item)
        named.append((f"{part}.objective.{i}" if part != "objective" else f"objective.{i}", param))
        if part == "value_head":
            value_ids.add(id(param))
    for name, param in named:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if name.startswith("objective."):
            part = "objective"
        elif id(param) in value_ids:
            part = "value_head"
        elif id(param) in head_ids:
            part = "heads"
        else:
            part = "trunk"
        decay = param.ndim >= 2 and part != "objective"
        buckets.setdefault((part, decay), []).append(param)
    return [
        {"name": f"{part}{'' if decay else '_no_decay'}", "params": params, "lr": lrs[part],
         "weight_decay": cfg.weight_decay if decay else 0.0}
        for (part, decay), params in buckets.items()
    ]


def build_optimizer(model: nn.Module, cfg: TrainingConfig, extra: list[nn.Parameter] = ()) -> torch.optim.AdamW:
    groups = parameter_groups(model, cfg, extra)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, kind: str, min_lr_ratio: float) -> float:
    """Linear warmup from 0, then decay to min_lr_ratio at the last step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if kind == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, total_steps: int):
    sched = cfg.lr_scheduler
    warmup = int(round(sched.warmup_ratio * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, warmup, sched.type, sched.min_lr_ratio)
    )
