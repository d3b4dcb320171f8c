import json
import os

import numpy as np
import pytest

from weighted_mtp.data.jsonl_index import JsonlIndex, index_path_for
from weighted_mtp.data.records import Record, iter_records
from weighted_mtp.errors import DataError


def row(i, problem, correct, difficulty, output=None):
    return {"instruction": f"Solve {problem}", "input": "", "output": output or f"print({i}) # é{'x' * i}",
            "task_id": f"{problem}_{'correct' if correct else 'incorrect'}_{i}", "is_correct": correct,
            "problem_id": problem, "difficulty": difficulty}


def write(path, rows, blank_after=()):
    with open(path, "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            if i in blank_after:
                f.write("\n")
    return path


@pytest.fixture
def data(tmp_path):
    rows = [row(i, f"p{i % 3}", i % 2 == 0, i % 5) for i in range(20)]
    return write(tmp_path / "train.jsonl", rows, blank_after={4}), rows


def test_metadata_matches_file(data):
    path, rows = data
    idx = JsonlIndex.load_or_build(path)
    assert idx.built and len(idx) == 20
    assert idx.is_correct.tolist() == [r["is_correct"] for r in rows]
    assert idx.difficulty.tolist() == [r["difficulty"] for r in rows]
    assert [idx.problem_id(i) for i in range(20)] == [r["problem_id"] for r in rows]
    assert idx.problems == ["p0", "p1", "p2"]
    assert idx.output_chars.tolist() == [len(r["output"]) for r in rows]
    # Line numbers skip the blank line after row 4.
    assert idx.line_numbers.tolist()[4:7] == [5, 7, 8]
    assert idx.rows_of_problem("p1").tolist() == [1, 4, 7, 10, 13, 16, 19]


def test_read_returns_exact_rows_in_requested_order(data):
    path, rows = data
    idx = JsonlIndex.load_or_build(path)
    wanted = [17, 3, 5, 3, 0, -1]
    assert idx.read(wanted) == [Record(**rows[i]) for i in wanted]
    assert idx.read([]) == []
    with pytest.raises(IndexError):
        idx.read([20])


def test_cache_reused_when_unchanged(data):
    path, rows = data
    first = JsonlIndex.load_or_build(path)
    cache = index_path_for(path)
    assert first.built and cache.name == "train.jsonl.idx.npz" and cache.is_file()
    stamp = cache.stat().st_mtime_ns
    second = JsonlIndex.load_or_build(path)
    assert not second.built
    assert cache.stat().st_mtime_ns == stamp
    for name in ("offsets", "line_lengths", "line_numbers", "is_correct", "difficulty", "problem_index", "output_chars"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert second.problems == first.problems
    assert second.read([19, 0]) == [Record(**rows[19]), Record(**rows[0])]
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]


def test_rebuilt_when_file_changes(data):
    path, rows = data
    JsonlIndex.load_or_build(path)
    rows2 = [row(i, "q", True, 9, output="y" * i) for i in range(5)]
    write(path, rows2)
    idx = JsonlIndex.load_or_build(path)
    assert idx.built and len(idx) == 5 and idx.problems == ["q"]
    assert idx.read([4]) == [Record(**rows2[4])]
    assert not JsonlIndex.load_or_build(path).built


def test_rebuilt_when_same_size_and_mtime_but_content_differs(data):
    path, rows = data
    JsonlIndex.load_or_build(path)
    st = path.stat()
    text = path.read_bytes().replace(b'"difficulty": 0', b'"difficulty": 7')
    assert len(text) == st.st_size
    path.write_bytes(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    idx = JsonlIndex.load_or_build(path)
    assert idx.built and 7 in idx.difficulty.tolist()


def test_corrupt_cache_is_rebuilt(data):
    path, _ = data
    JsonlIndex.load_or_build(path)
    index_path_for(path).write_bytes(b"garbage")
    assert JsonlIndex.load_or_build(path).built


def test_read_after_edit_refuses(data):
    path, rows = data
    idx = JsonlIndex.load_or_build(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rows[0]) + "\n")
    with pytest.raises(DataError, match="changed since its index was built"):
        idx.read([0])


def test_build_validates_every_line(tmp_path):
    rows = [row(i, "p", True, 1) for i in range(6)]
    bad = dict(rows[4])
    del bad["output"]
    path = tmp_path / "bad.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in rows[:4] + [bad] + rows[5:]:
            f.write(json.dumps(r) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:5: missing field 'output'"):
        JsonlIndex.load_or_build(path)
    assert not index_path_for(path).exists()


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        JsonlIndex.load_or_build(tmp_path / "nope.jsonl")


def test_unwritable_directory_still_works(data, monkeypatch):
    path, rows = data

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr("weighted_mtp.files.tempfile.mkstemp", refuse)  # every atomic write starts here
    idx = JsonlIndex.load_or_build(path)
    assert idx.built and not index_path_for(path).exists()
    assert idx.read([2]) == [Record(**rows[2])]


def test_index_matches_iter_records(data):
    path, _ = data
    idx = JsonlIndex.load_or_build(path)
    assert idx.read(range(len(idx))) == list(iter_records(path))
