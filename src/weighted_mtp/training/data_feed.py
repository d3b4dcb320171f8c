"""From `dataset.*` + `data_sampling.*` to batches, with a position that can be saved and
restored: the resumed run reads exactly the batches the uninterrupted run would have read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weighted_mtp.config.schema import Config
from weighted_mtp.data.jsonl_index import JsonlIndex
from weighted_mtp.data.sampling import SampleStats, sample_pairs, sample_rows
from weighted_mtp.data.sources import resolve_data_path
from weighted_mtp.errors import DataError
from weighted_mtp.log import get_logger

log = get_logger(__name__)

@dataclass
class Split:
    path: Path
    items: list[Any]  # Records, or (correct, incorrect) Record pairs
    stats: SampleStats


def load_split(cfg: Config, which: str, pairwise: bool, progress: float = 0.0, progress_end: float = 1.0,
               seed_offset: int = 0, n: int | None = None) -> Split:
    """which: "train" or "validation". Validation never uses the curriculum. `n` overrides the
    configured count (e.g. a training subset evaluated like validation)."""
    s = cfg.data_sampling
    key = "dataset.train" if which == "train" else "dataset.validation"
    path = resolve_data_path(getattr(cfg.dataset, which), cfg, key)
    index = JsonlIndex.load_or_build(path)
    if n is None:
        if pairwise:
            n = (s.pairwise.n_pairs or s.n_samples) if which == "train" else (s.pairwise.val_n_pairs or s.val_n_samples)
        else:
            n = s.n_samples if which == "train" else s.val_n_samples
    seed = s.seed + seed_offset + (0 if which == "train" else 1_000_003)
    if pairwise:
        pairs, stats = sample_pairs(index, n, seed=seed, max_pairs_per_problem=s.max_pairs_per_problem,
                                    difficulty_bins=s.difficulty_bins, difficulty_weights=s.difficulty_weights,
                                    length_bins=s.length_bins, pairing=s.pairing)
        flat = index.read([i for pair in pairs for i in pair])
        items = list(zip(flat[0::2], flat[1::2]))
    else:
        rows, stats = sample_rows(index, n, seed=seed, correct_only=s.correct_only, correct_ratio=s.correct_ratio,
                                  difficulty_bins=s.difficulty_bins, difficulty_weights=s.difficulty_weights,
                                  curriculum=s.curriculum if which == "train" and s.curriculum else None,
                                  progress=progress, progress_end=progress_end)
        items = index.read(rows)
    if not items:
        raise DataError(f"empty split after sampling: {path} ({key}) gave 0 rows")
    what = "pairs" if pairwise else "rows"
    if len(items) < n:
        message = f"{path}: asked for {n} {what}, only {len(items)} exist with these filters"
        if s.strict:
            raise DataError(message + " (data_sampling.strict is true)")
        log.info(f"note: {message}; using {len(items)}")
    return Split(path=path, items=items, stats=stats)


def problem_ids(items: list[Any]) -> set[str]:
    """Problems of a split's items (Records or (correct, incorrect) pairs)."""
    return {(item[0] if isinstance(item, tuple) else item).problem_id for item in items}


def policy_task_ids(items: list[Any]) -> list[str]:
    """The task ids the policy trains on, in order: each Record, or each pair's correct side."""
    return [(item[0] if isinstance(item, tuple) else item).task_id for item in items]


def training_order_digest(cfg: Config, pairwise: bool) -> str:
    """A short hash of the first epoch's training rows in the order the loop reads them (the
    policy's side of each item): two runs with the same digest trained on the same rows in the
    same order, which is what makes arms of a comparison differ only in their weights."""
    import hashlib

    split = load_split(cfg, "train", pairwise, progress_end=min(1.0, 1.0 / max(1.0, cfg.training.n_epochs)))
    feed = BatchFeed(cfg, split, cfg.training.batch_size, pairwise, cfg.training.n_epochs)
    order = policy_task_ids(feed._epoch_items())
    return hashlib.sha1("\n".join(order).encode()).hexdigest()[:10]


class BatchFeed:
    """Endless batches over epochs. Each epoch is a seeded permutation of the split (or, with a
    curriculum, a fresh staged sample for that epoch's span of training progress), so the
    position (epoch, batch) fully determines what comes next."""

    def __init__(self, cfg: Config, split: Split, batch_size: int, pairwise: bool, n_epochs: float):
        self.cfg, self.split, self.batch_size, self.pairwise = cfg, split, batch_size, pairwise
        self.n_epochs = max(1.0, n_epochs)
        self.epoch, self.batch_in_epoch = 0, 0
        self._order: list[Any] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.split.items) // self.batch_size)

    def _epoch_items(self) -> list[Any]:
        if self.cfg.data_sampling.curriculum and not self.pairwise:
            if self.epoch == 0:
                return self.split.items  # sampled in stages already, in order
            span = 1.0 / self.n_epochs
            start = min(self.epoch * span, 1.0)
            split = load_split(self.cfg, "train", False, progress=start, progress_end=min(start + span, 1.0),
                               seed_offset=self.epoch)
            return split.items
        rng = np.random.default_rng(self.cfg.data_sampling.seed + 7919 * (self.epoch + 1))
        perm = rng.permutation(len(self.split.items))
        return [self.split.items[i] for i in perm]

    def next_batch(self) -> list[Any]:
        if self._order is None:
            self._order = self._epoch_items()
        start = self.batch_in_epoch * self.batch_size
        batch = self._order[start:start + self.batch_size]
        self.batch_in_epoch += 1
        if start + self.batch_size >= len(self._order):
            self.epoch, self.batch_in_epoch, self._order = self.epoch + 1, 0, None
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch_in_epoch, self._order = state["epoch"], state["batch_in_epoch"], None
