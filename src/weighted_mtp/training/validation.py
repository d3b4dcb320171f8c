"""Validation: the objective in eval mode over a whole split, aggregated exactly (sums of
per-token quantities over sums of counts, not means of batch means), plus per-sample outputs
that the objective turns into split-level metrics (AUC, F1). It reads and changes no training
state, so validating never alters the training trajectory."""

from __future__ import annotations

from typing import Callable

import torch

from weighted_mtp.training.distributed import DistContext, gather_sums, shard


@torch.no_grad()
def evaluate_split(model, objective, items: list, collate, batch_size: int, device: torch.device,
                   autocast: Callable, dist_ctx=None) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Returns (metrics from the objective's sums, concatenated per-sample outputs).

    With several processes (`dist_ctx`), each evaluates its strided share of the items and the
    sums are added over processes, so the metrics are those of the whole split. Every process
    runs the same number of forwards (a sharded model gathers parameters in each one): a
    process whose share has run out evaluates a stand-in batch and discards it. One process
    (`dist_ctx` None or of size 1) is the same path: its share is every item."""
    ctx = dist_ctx or DistContext()
    local = shard(items, ctx)
    per_rank = -(-len(items) // ctx.world_size)
    n_batches = -(-per_rank // batch_size)
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    samples: dict[str, list[torch.Tensor]] = {}
    try:
        for i in range(n_batches):
            chunk = local[i * batch_size:(i + 1) * batch_size]
            stand_in = not chunk
            batch = collate(chunk or items[:1])
            batch.pop("n_truncated", None)
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with autocast():
                out = objective(model, batch, training=False)
            if stand_in:
                continue
            for name, (num, den) in out.sums.items():
                acc = sums.setdefault(name, [0.0, 0.0])
                acc[0] += float(num)
                acc[1] += float(den)
            for name, value in out.samples.items():
                samples.setdefault(name, []).append(value.detach().float().cpu())
    finally:
        model.train(was_training)
    sums, samples = gather_sums(ctx, sums, samples)
    metrics = {name: (num / den if den > 0 else float("nan")) for name, (num, den) in sums.items()}
    return metrics, {name: torch.cat(parts) for name, parts in samples.items()}


def run_validation(model, objective, val_items: list, train_eval_items: list | None, collate, batch_size: int,
                   device: torch.device, autocast: Callable, dist_ctx=None) -> dict[str, float]:
    """`val/*` metrics; with a training subset also `train_eval/*` and `gap/*` (train minus
    validation), the overfitting signal a critic must be judged by."""
    val, val_samples = evaluate_split(model, objective, val_items, collate, batch_size, device, autocast, dist_ctx)
    ref_metrics, ref_samples = ({}, None)
    if train_eval_items:
        ref_metrics, ref_samples = evaluate_split(model, objective, train_eval_items, collate, batch_size, device,
                                                  autocast, dist_ctx)
        ref_metrics.update(objective.validation_metrics(ref_samples, ref_samples))
    val.update(objective.validation_metrics(val_samples, ref_samples))
    out = {f"val/{k}": v for k, v in val.items()}
    out.update({f"train_eval/{k}": v for k, v in ref_metrics.items()})
    out.update({f"gap/{k}": ref_metrics[k] - v for k, v in val.items() if k in ref_metrics})
    return out
