"""Validation: the objective in eval mode over the whole validation split, aggregated exactly
(sums of per-token quantities over sums of counts, not means of batch means). It reads and
changes no training state, so validating never alters the training trajectory."""

from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def run_validation(model, objective, items: list, collate, batch_size: int, device: torch.device,
                   autocast: Callable) -> dict[str, float]:
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    try:
        for start in range(0, len(items), batch_size):
            batch = collate(items[start:start + batch_size])
            batch.pop("n_truncated", None)
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with autocast():
                out = objective(model, batch, training=False)
            for name, (num, den) in out.sums.items():
                acc = sums.setdefault(name, [0.0, 0.0])
                acc[0] += float(num)
                acc[1] += float(den)
    finally:
        model.train(was_training)
    return {f"val/{name}": (num / den if den > 0 else float("nan")) for name, (num, den) in sums.items()}
