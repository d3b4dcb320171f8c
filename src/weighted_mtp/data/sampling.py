"""Deterministic samplers over a JsonlIndex's metadata: which rows (or correct/incorrect pairs)
an epoch trains on, and in what order.

They only look at metadata arrays, never at text, so an epoch over a multi-GB file is planned in
milliseconds. Every sampler takes an explicit seed and builds its own numpy Generator: the same
config must give the same rows on every rank and on resume, whatever else touched global RNGs.

Counts are allocated with the largest-remainder method so that bin proportions are exact up to
one row, rather than drifting as independent random draws would."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from weighted_mtp.errors import ConfigError, DataError

ALL_BIN = "all"


class IndexLike(Protocol):
    """What samplers read; JsonlIndex satisfies it, and tests may pass any stand-in."""

    path: Any
    is_correct: np.ndarray
    difficulty: np.ndarray
    problem_index: np.ndarray
    output_chars: np.ndarray


@dataclass
class SampleStats:
    """What a sampler was asked for and what it could give, so a short split is logged rather
    than crashing or going unnoticed."""

    requested: int
    returned: int = 0
    per_bin: dict[str, int] = field(default_factory=dict)
    per_bin_requested: dict[str, int] = field(default_factory=dict)
    skipped_problems: int = 0
    n_correct: int = 0
    n_incorrect: int = 0

    @property
    def shortfall(self) -> int:
        return self.requested - self.returned


# -- parameter handling -------------------------------------------------------------------


def _get(obj: Any, key: str) -> Any:
    # Curriculum stages arrive as dicts, dataclasses or OmegaConf nodes depending on the caller.
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


def _bins(difficulty_bins: Mapping[str, Sequence[int]] | None) -> list[tuple[str, int, int]]:
    """Validated bins in config order. Overlap is rejected because a row in two bins would make
    the configured weights impossible to honour exactly."""
    if not difficulty_bins:
        return [(ALL_BIN, -(2**62), 2**62)]
    out: list[tuple[str, int, int]] = []
    for name, bounds in difficulty_bins.items():
        bounds = list(bounds)
        if len(bounds) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            raise ConfigError(f"data_sampling.difficulty_bins.{name}: expected [lo, hi] integers, got {bounds}")
        lo, hi = bounds
        if lo > hi:
            raise ConfigError(f"data_sampling.difficulty_bins.{name}: lo {lo} > hi {hi}")
        for other, olo, ohi in out:
            if lo <= ohi and olo <= hi:
                raise ConfigError(
                    f"data_sampling.difficulty_bins: '{name}' [{lo}, {hi}] overlaps '{other}' [{olo}, {ohi}]")
        out.append((str(name), lo, hi))
    return out


def _bin_ids(index: IndexLike, bins: list[tuple[str, int, int]]) -> np.ndarray:
    """Bin position of every row; -1 for rows outside every bin (they are never sampled)."""
    ids = np.full(index.difficulty.shape[0], -1, dtype=np.int64)
    for b, (_, lo, hi) in enumerate(bins):
        ids[(index.difficulty >= lo) & (index.difficulty <= hi)] = b
    return ids


def _weights(bins: list[tuple[str, int, int]], weights: Mapping[str, float] | None,
             natural: Sequence[int], where: str) -> np.ndarray:
    """Per-bin weights. None keeps the file's natural mix (weight = rows available); a bin
    missing from an explicit mapping gets weight 0; a name that is not a bin is a typo."""
    if weights is None:
        return np.asarray(natural, dtype=np.float64)
    names = [name for name, _, _ in bins]
    unknown = [k for k in weights if k not in names]
    if unknown:
        raise ConfigError(f"{where}: unknown difficulty bin(s) {unknown}; bins are {names}")
    w = np.asarray([float(weights.get(name, 0.0)) for name in names], dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise ConfigError(f"{where}: weights must be finite and >= 0, got {dict(weights)}")
    return w


def _allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` in proportion to `weights` (largest remainder; ties to the larger weight,
    then to the earlier entry). All-zero weights allocate nothing."""
    w = np.asarray(weights, dtype=np.float64)
    s = w.sum()
    if total <= 0 or s <= 0:
        return [0] * len(w)
    quotas = w / s * total
    counts = np.floor(quotas).astype(np.int64)
    remainder = total - int(counts.sum())
    order = sorted(range(len(w)), key=lambda i: (-(quotas[i] - counts[i]), -w[i], i))
    for i in order[:remainder]:
        counts[i] += 1
    return [int(c) for c in counts]


def _cell_quotas(total: int, bin_weights: Sequence[float], class_fractions: Sequence[float]) -> list[int]:
    """Counts per (bin, class) cell, bin-major. Allocated in two levels (bins, then the class
    total spread over bins) so that both the bin counts and the global class counts are exact;
    allocating the cells directly could miss the class total by one row per bin."""
    per_bin = _allocate(total, bin_weights)
    if len(class_fractions) == 1:
        return per_bin
    n_first = _allocate(total, class_fractions)[0]
    first = _allocate(n_first, per_bin)  # quota n_first*k/total <= k, so never exceeds a bin
    return [q for k, f in zip(per_bin, first) for q in (f, k - f)]


def _validate_schedule(schedule: Sequence[Any]) -> list[tuple[float, Mapping[str, float]]]:
    stages = [(float(_get(s, "until")), _get(s, "weights")) for s in schedule]
    if not stages:
        raise ConfigError("data_sampling.curriculum: empty schedule")
    prev = 0.0
    for i, (until, _) in enumerate(stages):
        if not prev < until <= 1.0:
            raise ConfigError(
                f"data_sampling.curriculum[{i}].until: must be in ({prev}, 1.0] and increasing, got {until}")
        prev = until
    if stages[-1][0] != 1.0:
        raise ConfigError(f"data_sampling.curriculum[{len(stages) - 1}].until: last stage must end at 1.0")
    return stages


def curriculum_weights(schedule: Sequence[Any], progress: float) -> dict[str, float]:
    """Difficulty weights in force at `progress` in [0, 1]: those of the first stage whose
    `until` lies beyond it (a stage covers [previous until, until))."""
    if not 0.0 <= progress <= 1.0:
        raise ConfigError(f"curriculum progress must be in [0, 1], got {progress}")
    stages = _validate_schedule(schedule)
    for until, weights in stages:
        if progress < until:
            return dict(weights)
    return dict(stages[-1][1])


def _empty_error(index: IndexLike, what: str, filters: dict[str, Any]) -> DataError:
    shown = ", ".join(f"{k}={v}" for k, v in filters.items())
    return DataError(f"empty split after sampling: {index.path} has 0 {what} matching {shown}")


# -- rows ---------------------------------------------------------------------------------


def sample_rows(
    index: IndexLike,
    n_samples: int,
    *,
    seed: int,
    correct_only: bool = False,
    correct_ratio: float | None = None,
    difficulty_bins: Mapping[str, Sequence[int]] | None = None,
    difficulty_weights: Mapping[str, float] | None = None,
    curriculum: Sequence[Any] | None = None,
    progress: float = 0.0,
    progress_end: float = 1.0,
) -> tuple[list[int], SampleStats]:
    """Row indices for one pass over the training progress span [progress, progress_end].

    Without a curriculum the rows come shuffled, drawn with `difficulty_weights` (renormalised
    over bins that have rows). With one, the list is built in stage segments: the part of the
    list that training consumes during a stage is drawn with that stage's weights (they replace
    `difficulty_weights`), and rows are never repeated across segments. `progress`/`progress_end` let a multi-epoch run or a resume
    plan just its part of the schedule.

    `correct_ratio` splits every bin's share into correct and incorrect rows; `correct_only`
    (SFT) keeps correct rows only. A bin or class with too few rows gives what it has; the
    shortfall is reported in the stats, not spread over other bins, so proportions stay honest.
    """
    if n_samples <= 0:
        raise ConfigError(f"data_sampling.n_samples: must be > 0, got {n_samples}")
    if correct_ratio is not None:
        if not 0.0 <= correct_ratio <= 1.0:
            raise ConfigError(f"data_sampling.correct_ratio: must be in [0, 1], got {correct_ratio}")
        if correct_only and correct_ratio != 1.0:
            raise ConfigError("data_sampling: correct_only and correct_ratio < 1 contradict each other")
    if not 0.0 <= progress < progress_end <= 1.0:
        raise ConfigError(f"progress span must satisfy 0 <= start < end <= 1, got [{progress}, {progress_end}]")

    bins = _bins(difficulty_bins)
    bin_ids = _bin_ids(index, bins)
    eligible = bin_ids >= 0
    if correct_only:
        eligible &= index.is_correct
    classes: list[tuple[np.ndarray | None, float]] = (
        [(None, 1.0)] if correct_ratio is None or correct_only
        else [(index.is_correct, correct_ratio), (~index.is_correct, 1.0 - correct_ratio)]
    )
    available = [int((eligible & (bin_ids == b)).sum()) for b in range(len(bins))]

    if curriculum:
        stages = _validate_schedule(curriculum)
        spans, lo = [], 0.0
        for until, weights in stages:
            spans.append((max(0.0, min(until, progress_end) - max(lo, progress)), weights))
            lo = until
        segment_sizes = _allocate(n_samples, [s for s, _ in spans])
        segments = [(size, _weights(bins, w, available, f"data_sampling.curriculum[{i}].weights"))
                    for i, (size, (_, w)) in enumerate(zip(segment_sizes, spans)) if size > 0]
    else:
        segments = [(n_samples, _weights(bins, difficulty_weights, available, "data_sampling.difficulty_weights"))]

    rng = np.random.default_rng(seed)
    used = np.zeros_like(eligible)
    stats = SampleStats(requested=n_samples,
                        per_bin={name: 0 for name, _, _ in bins},
                        per_bin_requested={name: 0 for name, _, _ in bins})
    out: list[int] = []
    for size, w in segments:
        w = np.where(np.asarray(available) > 0, w, 0.0)  # renormalise over non-empty bins
        quotas = _cell_quotas(size, w, [frac for _, frac in classes])
        chosen: list[np.ndarray] = []
        for cell, quota in enumerate(quotas):
            b, c = divmod(cell, len(classes))
            mask = classes[c][0]
            name = bins[b][0]
            stats.per_bin_requested[name] += quota
            if quota == 0:
                continue
            pool_mask = eligible & ~used & (bin_ids == b)
            if mask is not None:
                pool_mask &= mask
            pool = np.flatnonzero(pool_mask)
            take = rng.choice(pool, size=min(quota, pool.size), replace=False) if pool.size else pool
            used[take] = True
            stats.per_bin[name] += int(take.size)
            chosen.append(take)
        if chosen:
            segment = np.concatenate(chosen)
            rng.shuffle(segment)
            out.extend(int(i) for i in segment)

    if not out:
        raise _empty_error(index, "rows", {
            "correct_only": correct_only, "correct_ratio": correct_ratio,
            "difficulty_bins": dict(difficulty_bins) if difficulty_bins else None,
            "difficulty_weights": dict(difficulty_weights) if difficulty_weights else None,
            "curriculum": bool(curriculum),
        })
    stats.returned = len(out)
    stats.n_correct = int(index.is_correct[out].sum())
    stats.n_incorrect = stats.returned - stats.n_correct
    return out, stats


# -- pairs --------------------------------------------------------------------------------


def length_bin_ids(output_chars: np.ndarray, length_bins: Sequence[int] | None) -> np.ndarray:
    """Bucket of each row's output length: boundaries [b0, b1, ...] give buckets
    [0, b0), [b0, b1), ..., [b_last, inf)."""
    if not length_bins:
        return np.zeros(output_chars.shape[0], dtype=np.int64)
    bounds = list(length_bins)
    if any(not isinstance(b, int) or isinstance(b, bool) or b <= 0 for b in bounds) or bounds != sorted(set(bounds)):
        raise ConfigError(f"data_sampling.length_bins: expected increasing positive integers, got {bounds}")
    return np.searchsorted(np.asarray(bounds), output_chars, side="right").astype(np.int64)


def sample_pairs(
    index: IndexLike,
    n_pairs: int,
    *,
    seed: int,
    max_pairs_per_problem: int | None = None,
    difficulty_bins: Mapping[str, Sequence[int]] | None = None,
    difficulty_weights: Mapping[str, float] | None = None,
    length_bins: Sequence[int] | None = None,
    pairing: str = "one_to_one",
) -> tuple[list[tuple[int, int]], SampleStats]:
    """(correct_row, incorrect_row) pairs for pairwise/critic objectives.

    Both rows of a pair come from the same problem (and the same difficulty bin, and with
    `length_bins` the same output-length bucket, so a critic cannot win by scoring length).
    `pairing="one_to_one"`: each row appears in at most one pair, so no single solution dominates
    the gradient. `pairing="all_combinations"` (seed 001): every (correct, incorrect) product
    within a group, so a problem with c correct and i incorrect solutions offers c * i pairs.
    `max_pairs_per_problem` stops problems with many solutions from crowding out the rest.
    Problems that cannot form a pair are skipped and counted."""
    if n_pairs <= 0:
        raise ConfigError(f"n_pairs must be > 0, got {n_pairs}")
    if pairing not in ("one_to_one", "all_combinations"):
        raise ConfigError(f"data_sampling.pairing: expected one_to_one or all_combinations, got {pairing!r}")
    if max_pairs_per_problem is not None and max_pairs_per_problem < 1:
        raise ConfigError(f"data_sampling.max_pairs_per_problem: must be >= 1, got {max_pairs_per_problem}")
    bins = _bins(difficulty_bins)
    bin_ids = _bin_ids(index, bins)
    lbin = length_bin_ids(index.output_chars, length_bins)
    rng = np.random.default_rng(seed)

    rows = np.flatnonzero(bin_ids >= 0)
    # Group rows by (problem, difficulty bin, length bin) in a stable order so that the draw
    # depends only on the seed and the file, not on dict iteration or hashing.
    keys = np.stack([index.problem_index[rows], bin_ids[rows], lbin[rows]])
    order = np.lexsort((rows, keys[2], keys[1], keys[0]))
    rows, keys = rows[order], keys[:, order]
    boundaries = np.flatnonzero(np.any(np.diff(keys, axis=1) != 0, axis=0)) + 1
    candidates: list[list[tuple[int, int]]] = [[] for _ in bins]
    problem_pairs: dict[int, list[tuple[int, tuple[int, int]]]] = {}
    for group in np.split(np.arange(rows.size), boundaries) if rows.size else []:
        g_rows = rows[group]
        problem, b = int(keys[0, group[0]]), int(keys[1, group[0]])
        pos = g_rows[index.is_correct[g_rows]]
        neg = g_rows[~index.is_correct[g_rows]]
        rng.shuffle(pos)
        rng.shuffle(neg)
        pairs = problem_pairs.setdefault(problem, [])
        if pairing == "one_to_one":
            pairs.extend((b, (int(p), int(n))) for p, n in zip(pos, neg))
        else:
            pairs.extend((b, (int(p), int(n))) for p in pos for n in neg)

    skipped = 0
    for problem, pairs in problem_pairs.items():
        if not pairs:
            skipped += 1
            continue
        if max_pairs_per_problem is not None and len(pairs) > max_pairs_per_problem:
            keep = rng.choice(len(pairs), size=max_pairs_per_problem, replace=False)
            pairs = [pairs[i] for i in sorted(keep)]
        for b, pair in pairs:
            candidates[b].append(pair)

    available = [len(c) for c in candidates]
    w = _weights(bins, difficulty_weights, available, "data_sampling.difficulty_weights")
    w = np.where(np.asarray(available) > 0, w, 0.0)
    quotas = _allocate(n_pairs, w)
    stats = SampleStats(requested=n_pairs, skipped_problems=skipped,
                        per_bin={name: 0 for name, _, _ in bins},
                        per_bin_requested={name: q for (name, _, _), q in zip(bins, quotas)})
    out: list[tuple[int, int]] = []
    for b, quota in enumerate(quotas):
        k = min(quota, available[b])
        if k:
            picks = rng.choice(available[b], size=k, replace=False)
            out.extend(candidates[b][i] for i in picks)
            stats.per_bin[bins[b][0]] = k
    if not out:
        raise _empty_error(index, "(correct, incorrect) pairs", {
            "difficulty_bins": dict(difficulty_bins) if difficulty_bins else None,
            "difficulty_weights": dict(difficulty_weights) if difficulty_weights else None,
            "length_bins": list(length_bins) if length_bins else None,
            "skipped_problems": skipped,
        })
    perm = rng.permutation(len(out))
    out = [out[i] for i in perm]
    stats.returned = stats.n_correct = stats.n_incorrect = len(out)
    return out, stats
