"""The embedded dataset generator: labels come from running tests, splits are disjoint by problem
and by instruction text, the files are deterministic, and the verifier survives bad solutions."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from weighted_mtp.data.embedded import VERSION, build_embedded_dataset, corpus_texts, run_tests
from weighted_mtp.data.embedded.families import FAMILIES
from weighted_mtp.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
ROW_FIELDS = {"instruction": str, "input": str, "output": str, "task_id": str, "is_correct": bool,
              "problem_id": str, "difficulty": int}
PROBLEM_FIELDS = {"problem_id": str, "instruction": str, "entry_point": str, "tests": str, "difficulty": int}
FILES = [f"{s}.jsonl" for s in SPLITS] + [f"problems_{s}.jsonl" for s in SPLITS] + ["manifest.json"]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded_default")
    start = time.perf_counter()
    paths = build_embedded_dataset(out, seed=0, n_problems=2000)
    elapsed = time.perf_counter() - start
    print(f"default embedded build: {elapsed:.1f}s")  # informative only; no timing assertion
    rows = {s: _read(paths[s]) for s in SPLITS}
    problems = {s: _read(out / f"problems_{s}.jsonl") for s in SPLITS}
    manifest = json.loads((out / "manifest.json").read_text())
    return out, paths, rows, problems, manifest


def test_returns_split_paths(built):
    out, paths, *_ = built
    assert set(paths) == set(SPLITS)
    for split in SPLITS:
        assert paths[split] == out / f"{split}.jsonl"
    for name in FILES:
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes cleaned up


def test_row_schema(built):
    _, _, rows, problems, _ = built
    suffix = re.compile(r"^(?P<pid>.+)_(?P<kind>correct|incorrect)_(?P<i>\d+)$")
    for split in SPLITS:
        assert rows[split], split
        counters: dict[tuple[str, str], list[int]] = defaultdict(list)
        for row in rows[split]:
            assert set(row) == set(ROW_FIELDS), row.keys()
            for name, typ in ROW_FIELDS.items():
                assert type(row[name]) is typ, (name, row[name])  # bool is not an int here, and vice versa
            assert row["input"] == ""
            assert 1 <= row["difficulty"] <= 5
            assert row["output"].strip() and row["instruction"].strip()
            m = suffix.match(row["task_id"])
            assert m, row["task_id"]
            assert m["pid"] == row["problem_id"]
            assert (m["kind"] == "correct") == row["is_correct"], row["task_id"]
            counters[(row["problem_id"], m["kind"])].append(int(m["i"]))
        for key, ids in counters.items():
            assert ids == list(range(len(ids))), key  # numbered 0..n-1 per problem and label
        for p in problems[split]:
            assert set(p) == set(PROBLEM_FIELDS)
            for name, typ in PROBLEM_FIELDS.items():
                assert type(p[name]) is typ, (name, p[name])
            assert f"`{p['entry_point']}(" in p["instruction"]  # the instruction names the function
            assert p["tests"].count("assert ") >= 4
        assert {r["problem_id"] for r in rows[split]} == {p["problem_id"] for p in problems[split]}


def test_splits_disjoint_by_problem_and_instruction(built):
    _, _, rows, problems, _ = built
    pids = {s: {r["problem_id"] for r in rows[s]} for s in SPLITS}
    texts = {s: {" ".join(r["instruction"].lower().split()) for r in rows[s]} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not pids[a] & pids[b], (a, b)
            assert not texts[a] & texts[b], (a, b)
    # Same task worded differently stays in one split: no held-out reference code is in train.
    train_code = {r["output"] for r in rows["train"] if r["is_correct"]}
    for split in ("valid", "test"):
        leaked = [r["task_id"] for r in rows[split] if r["is_correct"] and r["output"] in train_code]
        assert not leaked, leaked[:5]
    n = {s: len(problems[s]) for s in SPLITS}
    assert n["train"] + n["valid"] + n["test"] == 2000
    assert 150 <= n["valid"] <= 250 and 150 <= n["test"] <= 250  # about 80/10/10


def test_many_distinct_instructions_and_families(built):
    _, _, rows, problems, manifest = built
    all_problems = [p for s in SPLITS for p in problems[s]]
    instructions = {p["instruction"] for p in all_problems}
    assert len(instructions) == len(all_problems) >= 1000
    assert len({p["problem_id"] for p in all_problems}) == len(all_problems)
    assert len(manifest["families"]) >= 25
    assert len(FAMILIES) >= 25
    difficulties = {p["difficulty"] for p in all_problems}
    assert len(difficulties) >= 3


def test_correct_and_incorrect_per_problem(built):
    _, _, rows, _, _ = built
    labels: dict[str, set[bool]] = defaultdict(set)
    count: dict[str, int] = defaultdict(int)
    for split in SPLITS:
        for r in rows[split]:
            labels[r["problem_id"]].add(r["is_correct"])
            count[r["problem_id"]] += 1
    assert all(True in v for v in labels.values())  # every kept problem is solvable
    both = sum(len(v) == 2 for v in labels.values())
    assert both >= 0.9 * len(labels)
    assert all(3 <= c <= 8 for c in count.values())
    share = sum(r["is_correct"] for r in rows["train"]) / len(rows["train"])
    assert 0.25 < share < 0.75


def test_manifest_counts_match_files(built):
    _, _, rows, problems, manifest = built
    assert manifest["version"] == VERSION
    assert manifest["seed"] == 0 and manifest["n_problems"] == 2000
    for split in SPLITS:
        st = manifest["splits"][split]
        assert st["rows"] == len(rows[split])
        assert st["problems"] == len(problems[split])
        assert st["correct"] == sum(r["is_correct"] for r in rows[split])
        assert st["incorrect"] == st["rows"] - st["correct"]


def _run_fresh(code: str, tests: str) -> bool:
    """Independent of verify.py: one plain interpreter per solution."""
    try:
        proc = subprocess.run([sys.executable, "-c", code + "\n" + tests], capture_output=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def test_sample_reverified_independently(built):
    _, _, rows, problems, _ = built
    tests = {p["problem_id"]: p["tests"] for s in SPLITS for p in problems[s]}
    everything = [r for s in SPLITS for r in rows[s]]
    rng = random.Random(1234)
    sample = rng.sample([r for r in everything if r["is_correct"]], 15)
    sample += rng.sample([r for r in everything if not r["is_correct"]], 15)
    for r in sample:
        assert _run_fresh(r["output"], tests[r["problem_id"]]) == r["is_correct"], r["task_id"]


def test_deterministic_same_seed(built, tmp_path):
    out, *_ = built
    build_embedded_dataset(tmp_path, seed=0, n_problems=2000)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_different_seed_differs(tmp_path):
    a = build_embedded_dataset(tmp_path / "a", seed=1, n_problems=150)
    b = build_embedded_dataset(tmp_path / "b", seed=2, n_problems=150)
    assert a["train"].read_bytes() != b["train"].read_bytes()
    instr_a = {r["instruction"] for r in _read(a["train"])}
    instr_b = {r["instruction"] for r in _read(b["train"])}
    assert len(instr_a & instr_b) < 0.5 * len(instr_a)


def test_cache_reuses_and_rebuilds(tmp_path):
    paths = build_embedded_dataset(tmp_path, seed=3, n_problems=60)
    stamp = {n: (tmp_path / n).stat().st_mtime_ns for n in FILES}
    again = build_embedded_dataset(tmp_path, seed=3, n_problems=60)
    assert again == paths
    assert {n: (tmp_path / n).stat().st_mtime_ns for n in FILES} == stamp  # nothing rewritten
    build_embedded_dataset(tmp_path, seed=3, n_problems=40)  # different n_problems: rebuild
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["n_problems"] == 40
    assert sum(st["problems"] for st in manifest["splits"].values()) == 40
    # A stale version in the manifest is not reused either.
    manifest["version"] = "embedded-v0"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    build_embedded_dataset(tmp_path, seed=3, n_problems=40)
    assert json.loads((tmp_path / "manifest.json").read_text())["version"] == VERSION


def test_bad_arguments():
    with pytest.raises(ConfigError):
        build_embedded_dataset("/nonexistent/never", seed=0, n_problems=0)
    with pytest.raises(ConfigError):
        build_embedded_dataset("/nonexistent/never", seed="0", n_problems=10)  # type: ignore[arg-type]


def test_corpus_texts(built):
    out, _, rows, _, _ = built
    texts = list(corpus_texts(out))
    assert len(texts) == 2 * len(rows["train"])
    assert texts[0] == rows["train"][0]["instruction"]
    assert texts[1] == rows["train"][0]["output"]
    valid_only = {r["output"] for r in rows["valid"]} - {r["output"] for r in rows["train"]}
    assert not valid_only & set(texts)  # held-out solutions never reach the tokenizer corpus
    with pytest.raises(DataError):
        next(corpus_texts(out / "missing"))


T = "assert f(2) == 4\nassert f(0) == 0\n"


def test_run_tests_labels():
    items = [
        ("def f(x):\n    return 2 * x\n", T),                                   # correct
        ("def f(x):\n    return x + 2\n", T),                                   # wrong answer
        ("def f(x):\n    while True:\n        pass\n", T),                      # infinite loop
        ("def f(x):\n    raise RuntimeError('boom')\n", T),                     # crash
        ("def f(x)\n    return 2 * x\n", T),                                    # syntax error
        ("def f(x):\n    print('noise ' * 1000)\n    return x * 2\n", T),       # prints: still correct
        ("import os\nos._exit(0)\n", T),                                        # kills its worker
        ("def f(x):\n    try:\n        while True:\n            pass\n    except Exception:\n        return 2 * x\n", T),
        ("import sys\nsys.exit(0)\n", T),                                       # SystemExit is a failure
        ("def f(x):\n    return x << 1\n", T),                                  # correct, after the crash
    ]
    start = time.perf_counter()
    got = run_tests(items, timeout_s=0.5)
    assert got == [True, False, False, False, False, True, False, False, False, True]
    assert time.perf_counter() - start < 30  # the infinite loops were cut off, not waited out


def test_run_tests_many_items_keep_order():
    good, bad = ("def f(x):\n    return 2 * x\n", T), ("def f(x):\n    return 4\n", T)
    pattern = [random.Random(7).random() < 0.5 for _ in range(1500)]
    items = [good if p else bad for p in pattern]
    items[700] = ("import os\nos._exit(1)\n", T)  # a dead worker mid-batch must not shift labels
    pattern[700] = False
    assert run_tests(items, timeout_s=1.0) == pattern
    assert run_tests([]) == []


def test_run_tests_default_timeout_and_isolation():
    # Each solution gets a fresh namespace: a global from one must not leak into the next.
    # (Four items: two batches of two, so the pairs share a worker process.)
    leak = ("LEAK = 1\ndef f(x):\n    return 2 * x\n", T)
    use = ("def f(x):\n    return 2 * x + LEAK * 0\n", T)
    assert run_tests([leak, use, leak, use]) == [True, False, True, False]


def test_run_tests_survives_a_hang_the_worker_cannot_interrupt(monkeypatch):
    from weighted_mtp.data.embedded import verify

    monkeypatch.setattr(verify, "_STARTUP_S", 2.0)
    monkeypatch.setattr(verify, "_wall_per_item", lambda timeout_s: 1.5)
    # Blocking the timer signals defeats the worker's own limit; only the parent's deadline helps.
    hang = ("import signal, time\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGPROF})\n"
            "time.sleep(60)\n", T)
    good = ("def f(x):\n    return 2 * x\n", T)
    start = time.perf_counter()
    assert run_tests([good, hang, good, good, hang, good], timeout_s=0.2) == [True, False, True, True, False, True]
    assert time.perf_counter() - start < 40
