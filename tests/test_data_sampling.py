import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from weighted_mtp.data.jsonl_index import JsonlIndex
from weighted_mtp.data.sampling import (
    SampleStats, _allocate, curriculum_weights, length_bin_ids, sample_pairs, sample_rows,
)
from weighted_mtp.errors import ConfigError, DataError

BINS = {"low": [0, 2], "medium": [3, 5], "high": [6, 9]}


@dataclass
class FakeIndex:
    path: Path
    is_correct: np.ndarray
    difficulty: np.ndarray
    problem_index: np.ndarray
    output_chars: np.ndarray


def make_index(rows):
    """rows: (problem, is_correct, difficulty, output_chars)."""
    p, c, d, o = zip(*rows)
    return FakeIndex(Path("/data/train.jsonl"), np.array(c, bool), np.array(d, np.int64),
                     np.array(p, np.int64), np.array(o, np.int64))


@pytest.fixture
def balanced():
    # 100 rows per difficulty bin; within each bin 40 correct, 60 incorrect.
    rows = []
    for base in (0, 3, 6):
        for i in range(100):
            rows.append((base * 1000 + i // 10, i % 5 < 2, base + i % 3, 10 * i))
    return make_index(rows)


def difficulty_bin(d):
    return next(name for name, (lo, hi) in BINS.items() if lo <= d <= hi)


def test_allocate_largest_remainder():
    assert _allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert _allocate(7, [0.5, 0.3, 0.2]) == [4, 2, 1]
    assert _allocate(5, [0, 0]) == [0, 0]
    assert sum(_allocate(1001, [0.13, 0.61, 0.26])) == 1001


def test_deterministic_and_seed_dependent(balanced):
    kw = dict(difficulty_bins=BINS, difficulty_weights={"low": 0.5, "medium": 0.3, "high": 0.2})
    a, _ = sample_rows(balanced, 60, seed=3, **kw)
    b, _ = sample_rows(balanced, 60, seed=3, **kw)
    c, _ = sample_rows(balanced, 60, seed=4, **kw)
    assert a == b and a != c
    np.random.seed(0)  # global state must not matter
    assert sample_rows(balanced, 60, seed=3, **kw)[0] == a


def test_bin_proportions_exact_and_renormalised(balanced):
    bins = {**BINS, "extreme": [50, 60]}  # no rows: its weight is renormalised away
    weights = {"low": 0.25, "medium": 0.15, "high": 0.1, "extreme": 0.5}
    rows, stats = sample_rows(balanced, 50, seed=0, difficulty_bins=bins, difficulty_weights=weights)
    counts = Counter(difficulty_bin(int(balanced.difficulty[i])) for i in rows)
    assert counts == {"low": 25, "medium": 15, "high": 10}
    assert stats.per_bin == {"low": 25, "medium": 15, "high": 10, "extreme": 0}
    assert stats.returned == stats.requested == 50 and stats.shortfall == 0
    assert len(set(rows)) == len(rows)


def test_rows_outside_bins_never_sampled(balanced):
    rows, _ = sample_rows(balanced, 300, seed=0, difficulty_bins={"easy": [0, 1]})
    assert rows and all(int(balanced.difficulty[i]) <= 1 for i in rows)


def test_correct_ratio(balanced):
    rows, stats = sample_rows(balanced, 40, seed=1, correct_ratio=0.25, difficulty_bins=BINS,
                              difficulty_weights={"low": 1, "medium": 1, "high": 2})
    correct = int(balanced.is_correct[rows].sum())
    assert (correct, len(rows) - correct) == (10, 30) == (stats.n_correct, stats.n_incorrect)
    counts = Counter(difficulty_bin(int(balanced.difficulty[i])) for i in rows)
    assert counts == {"low": 10, "medium": 10, "high": 20}


def test_correct_only(balanced):
    rows, stats = sample_rows(balanced, 100, seed=1, correct_only=True)
    assert len(rows) == 100 and balanced.is_correct[rows].all() and stats.n_incorrect == 0


def test_shortfall_reported_not_raised(balanced):
    rows, stats = sample_rows(balanced, 1000, seed=0, correct_only=True, difficulty_bins=BINS,
                              difficulty_weights={"low": 1.0})
    assert len(rows) == 40 == stats.returned and stats.shortfall == 960
    assert stats.per_bin_requested["low"] == 1000 and stats.per_bin["low"] == 40


def test_empty_split_raises_naming_file_and_filters(balanced):
    index = make_index([(0, False, 1, 5), (1, False, 8, 5)])
    with pytest.raises(DataError) as err:
        sample_rows(index, 10, seed=0, correct_only=True, difficulty_bins=BINS)
    msg = str(err.value)
    assert msg.startswith("empty split after sampling: /data/train.jsonl has 0 rows matching correct_only=True")
    assert "difficulty_bins={'low': [0, 2]" in msg


def test_invalid_parameters(balanced):
    with pytest.raises(ConfigError, match="overlaps"):
        sample_rows(balanced, 5, seed=0, difficulty_bins={"a": [0, 3], "b": [3, 5]})
    with pytest.raises(ConfigError, match="unknown difficulty bin"):
        sample_rows(balanced, 5, seed=0, difficulty_bins=BINS, difficulty_weights={"hard": 1.0})
    with pytest.raises(ConfigError, match="contradict"):
        sample_rows(balanced, 5, seed=0, correct_only=True, correct_ratio=0.5)


STAGES = [{"until": 0.3, "weights": {"low": 1.0, "medium": 0.0, "high": 0.0}},
          {"until": 0.6, "weights": {"low": 0.0, "medium": 1.0}},
          {"until": 1.0, "weights": {"high": 1.0}}]


def test_curriculum_weights_by_progress():
    assert curriculum_weights(STAGES, 0.0)["low"] == 1.0
    assert curriculum_weights(STAGES, 0.29)["low"] == 1.0
    assert curriculum_weights(STAGES, 0.3) == {"low": 0.0, "medium": 1.0}
    assert curriculum_weights(STAGES, 1.0) == {"high": 1.0}
    with pytest.raises(ConfigError, match="last stage"):
        curriculum_weights([{"until": 0.5, "weights": {}}], 0.1)
    with pytest.raises(ConfigError, match="increasing"):
        curriculum_weights([{"until": 0.5, "weights": {}}, {"until": 0.4, "weights": {}}], 0.1)


def test_curriculum_epoch_follows_stages_in_order(balanced):
    rows, stats = sample_rows(balanced, 100, seed=0, difficulty_bins=BINS, curriculum=STAGES)
    bins = [difficulty_bin(int(balanced.difficulty[i])) for i in rows]
    assert bins == ["low"] * 30 + ["medium"] * 30 + ["high"] * 40
    assert len(set(rows)) == 100 and stats.per_bin == {"low": 30, "medium": 30, "high": 40}
    # Planning only the second half of training uses only the later stages' weights.
    rows, _ = sample_rows(balanced, 40, seed=0, difficulty_bins=BINS, curriculum=STAGES, progress=0.5)
    bins = [difficulty_bin(int(balanced.difficulty[i])) for i in rows]
    assert bins == ["medium"] * 8 + ["high"] * 32


def test_curriculum_does_not_repeat_rows_across_stages(balanced):
    stages = [{"until": 0.5, "weights": {"low": 1.0}}, {"until": 1.0, "weights": {"low": 1.0}}]
    rows, stats = sample_rows(balanced, 200, seed=0, difficulty_bins=BINS, curriculum=stages)
    assert len(rows) == len(set(rows)) == 100 and stats.shortfall == 100


# -- pairs ----------------------------------------------------------------------------------


@pytest.fixture
def pair_data():
    rows = []
    # problem 0: 3 correct, 5 incorrect; problem 1: 4 correct, 2 incorrect (difficulty 7)
    rows += [(0, True, 1, 100)] * 3 + [(0, False, 1, 100)] * 5
    rows += [(1, True, 7, 100)] * 4 + [(1, False, 7, 100)] * 2
    rows += [(2, True, 1, 50)] * 3          # only correct: skipped
    rows += [(3, False, 4, 50)] * 2         # only incorrect: skipped
    # problem 4: correct short, incorrect long -> no pair when length-balanced
    rows += [(4, True, 1, 10), (4, False, 1, 900)]
    # problem 5: mixed lengths
    rows += [(5, True, 2, 10), (5, True, 2, 900), (5, False, 2, 20), (5, False, 2, 950), (5, False, 2, 960)]
    return make_index(rows)


def check_pairs(index, pairs):
    used = [i for pair in pairs for i in pair]
    assert len(used) == len(set(used)), "a row was used twice"
    for pos, neg in pairs:
        assert index.problem_index[pos] == index.problem_index[neg]
        assert index.is_correct[pos] and not index.is_correct[neg]


def test_pairs_share_problem_and_use_rows_once(pair_data):
    pairs, stats = sample_pairs(pair_data, 100, seed=0)
    check_pairs(pair_data, pairs)
    # 3 + 2 + 1 + 2 possible pairs
    assert len(pairs) == 8 == stats.returned and stats.shortfall == 92
    assert stats.skipped_problems == 2
    assert sample_pairs(pair_data, 100, seed=0)[0] == pairs


def test_pairs_length_balanced(pair_data):
    pairs, stats = sample_pairs(pair_data, 100, seed=0, length_bins=[64, 512])
    check_pairs(pair_data, pairs)
    buckets = length_bin_ids(pair_data.output_chars, [64, 512])
    assert all(buckets[p] == buckets[n] for p, n in pairs)
    assert len(pairs) == 3 + 2 + 0 + 2 and stats.skipped_problems == 3


def test_pairs_max_per_problem_and_bins(pair_data):
    pairs, stats = sample_pairs(pair_data, 100, seed=1, max_pairs_per_problem=1,
                                difficulty_bins={"easy": [0, 5], "hard": [6, 9]})
    check_pairs(pair_data, pairs)
    assert Counter(int(pair_data.problem_index[p]) for p, _ in pairs) == {0: 1, 1: 1, 4: 1, 5: 1}
    assert stats.per_bin == {"easy": 3, "hard": 1}


def test_pairs_bin_weights(pair_data):
    pairs, stats = sample_pairs(pair_data, 2, seed=0, difficulty_bins={"easy": [0, 5], "hard": [6, 9]},
                                difficulty_weights={"easy": 0.0, "hard": 1.0})
    assert all(pair_data.difficulty[p] >= 6 for p, _ in pairs) and len(pairs) == 2


def test_pairs_empty_raises(pair_data):
    with pytest.raises(DataError, match=r"empty split after sampling: /data/train.jsonl has 0 \(correct, incorrect\) pairs"):
        sample_pairs(pair_data, 10, seed=0, difficulty_bins={"only_correct": [100, 100]})
    only_correct = make_index([(0, True, 1, 5), (1, True, 1, 5)])
    with pytest.raises(DataError, match="skipped_problems=2"):
        sample_pairs(only_correct, 10, seed=0)


def test_sampling_over_real_index(tmp_path):
    path = tmp_path / "train.jsonl"
    with open(path, "w") as f:
        for i in range(30):
            f.write(json.dumps({"instruction": "i", "input": "", "output": "o" * i, "task_id": f"p{i % 4}_x_{i}",
                                "is_correct": i % 3 == 0, "problem_id": f"p{i % 4}", "difficulty": i % 10}) + "\n")
    index = JsonlIndex.load_or_build(path)
    rows, stats = sample_rows(index, 5, seed=0, correct_only=True)
    assert all(r.is_correct for r in index.read(rows)) and isinstance(stats, SampleStats)
    pairs, _ = sample_pairs(index, 5, seed=0)
    for pos, neg in pairs:
        a, b = index.read([pos, neg])
        assert a.problem_id == b.problem_id and a.is_correct and not b.is_correct
