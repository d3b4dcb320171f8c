"""The feed's position fully determines what comes next: the resumed feed reads exactly the
batches the uninterrupted one would, epochs are reshuffled, and a curriculum is followed."""

import json

import pytest

from weighted_mtp.config.load import config_from_dict
from weighted_mtp.errors import DataError
from weighted_mtp.training.data_feed import BatchFeed, load_split


def _write(path, n_problems=30):
    rows = []
    for p in range(n_problems):
        for i, ok in enumerate([True, True, False]):
            rows.append({"instruction": f"task {p}", "input": "", "output": f"sol {p} {i}", "is_correct": ok,
                         "task_id": f"p{p}_{'correct' if ok else 'incorrect'}_{i}", "problem_id": f"p{p}",
                         "difficulty": 1 + p % 3})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(path, **sampling):
    return config_from_dict({"dataset": {"train": str(path), "validation": str(path)},
                             "data_sampling": {"n_samples": 24, "val_n_samples": 6, **sampling},
                             "mlflow": {"enabled": False}})


def test_resumed_feed_continues_identically_across_epochs(tmp_path):
    cfg = _cfg(_write(tmp_path / "d.jsonl"))
    split = load_split(cfg, "train", pairwise=False)
    assert len(split.items) == 24 and all(r.is_correct for r in split.items)
    a = BatchFeed(cfg, split, batch_size=5, pairwise=False, n_epochs=3)
    first = [a.next_batch() for _ in range(7)]  # crosses the epoch boundary (5 batches/epoch)
    state = a.state_dict()
    rest_a = [a.next_batch() for _ in range(6)]
    b = BatchFeed(cfg, split, batch_size=5, pairwise=False, n_epochs=3)
    b.load_state_dict(state)
    assert [[r.task_id for r in batch] for batch in (b.next_batch() for _ in range(6))] == \
           [[r.task_id for r in batch] for batch in rest_a]
    epoch0 = [r.task_id for batch in first[:5] for r in batch]
    assert sorted(epoch0) == sorted(r.task_id for r in split.items)  # an epoch covers the split once
    assert state == {"epoch": 1, "batch_in_epoch": 2}


def test_epochs_are_reshuffled(tmp_path):
    cfg = _cfg(_write(tmp_path / "d.jsonl"))
    feed = BatchFeed(cfg, load_split(cfg, "train", pairwise=False), batch_size=24, pairwise=False, n_epochs=2)
    e0, e1 = [r.task_id for r in feed.next_batch()], [r.task_id for r in feed.next_batch()]
    assert sorted(e0) == sorted(e1) and e0 != e1


def test_curriculum_orders_the_epoch_by_stage(tmp_path):
    cfg = _cfg(_write(tmp_path / "d.jsonl"),
               difficulty_bins={"easy": [1, 1], "hard": [2, 3]}, difficulty_weights={"easy": 0.5, "hard": 0.5},
               curriculum=[{"until": 0.5, "weights": {"easy": 1.0, "hard": 0.0}},
                           {"until": 1.0, "weights": {"easy": 0.0, "hard": 1.0}}])
    split = load_split(cfg, "train", pairwise=False)
    difficulties = [r.difficulty for r in split.items]
    half = len(difficulties) // 2
    assert set(difficulties[:half]) == {1} and set(difficulties[half:]) <= {2, 3}


def test_pairwise_split_pairs_share_problem(tmp_path):
    cfg = _cfg(_write(tmp_path / "d.jsonl"))
    split = load_split(cfg, "train", pairwise=True)
    assert split.items and all(p.problem_id == n.problem_id and p.is_correct and not n.is_correct
                               for p, n in split.items)


def test_empty_split_is_a_data_error_naming_the_file(tmp_path):
    cfg = _cfg(_write(tmp_path / "d.jsonl"), difficulty_bins={"x": [50, 60]}, difficulty_weights={"x": 1.0})
    with pytest.raises(DataError, match="d.jsonl"):
        load_split(cfg, "train", pairwise=False)
