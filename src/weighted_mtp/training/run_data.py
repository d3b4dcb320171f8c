"""The splits one run reads: the objective's own files, or the dataset's train/validation splits
with the training items that are evaluated like validation and the count of problems in both."""

from __future__ import annotations

from weighted_mtp.config import Config
from weighted_mtp.training.data_feed import Split, load_split, problem_ids


def load_run_data(objective, cfg: Config) -> tuple[Split, Split | None, list | None, int]:
    """(train split, validation split, training items evaluated like validation, problems in both)."""
    if objective.own_data:  # an objective with its own data format (CLaRa's JSONL)
        train_split, val_split = _own_splits(objective, cfg)
        return train_split, val_split, None, 0
    pairwise, val_pairwise = objective.batch_kind == "pairwise", objective.val_batch_kind == "pairwise"
    first_span = min(1.0, 1.0 / max(1.0, cfg.training.n_epochs))
    train_split = load_split(cfg, "train", pairwise, progress_end=first_span)
    val_split = load_split(cfg, "validation", val_pairwise) if cfg.data_sampling.val_n_samples > 0 else None
    train_eval_items = _train_eval_items(cfg, train_split, pairwise, val_pairwise)
    overlap = len(problem_ids(train_split.items) & problem_ids(val_split.items)) if val_split else 0
    return train_split, val_split, train_eval_items, overlap


def _own_splits(objective, cfg: Config):
    """Splits of an objective that reads its own files: `load_items(which)` gives (path, items);
    the loop only shuffles and batches them (`data_sampling.n_samples` / `val_n_samples` cap them)."""
    path, items = objective.load_items("train")
    train_split = Split(path=path, items=items[: cfg.data_sampling.n_samples], stats=None)
    val_split = None
    if cfg.data_sampling.val_n_samples > 0:
        path, items = objective.load_items("validation")
        val_split = Split(path=path, items=items[: cfg.data_sampling.val_n_samples], stats=None)
    return train_split, val_split


def _train_eval_items(cfg: Config, train_split, pairwise: bool, val_pairwise: bool) -> list | None:
    """Training items evaluated like validation: the first trained items when both use the
    same batch kind, else pairs drawn from the training file (problems the model trained on)."""
    n = cfg.data_sampling.train_eval_n_samples
    if n <= 0:
        return None
    if pairwise == val_pairwise:
        return train_split.items[:n]
    return load_split(cfg, "train", val_pairwise, n=n, seed_offset=1).items
