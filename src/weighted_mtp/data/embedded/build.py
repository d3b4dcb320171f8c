"""Assemble the embedded dataset: draw problems, label solutions by running them, split by
problem and write the files.

Files in out_dir:
  train.jsonl / valid.jsonl / test.jsonl   one row per solution:
      {"instruction", "input": "", "output": code, "task_id": "<problem_id>_correct_<i>" or
       "<problem_id>_incorrect_<i>", "is_correct", "problem_id", "difficulty"}
  problems_<split>.jsonl                   one row per problem:
      {"problem_id", "instruction", "entry_point", "tests", "difficulty"}
  manifest.json                            counts per split, seed, n_problems, version

`is_correct` comes only from running the tests; the task_id suffix follows that label, so a
"buggy" variant that passes every test is a correct row. The same seed gives byte-identical
files; a matching manifest.json makes a later call return the existing files (a cache).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator

from weighted_mtp.data.embedded.base import Problem
from weighted_mtp.data.embedded.families import generate_problems, instruction_key
from weighted_mtp.data.embedded.verify import run_tests
from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.files import atomic_write_text

# Bump whenever the output for a given seed could change (families, wording, splitting, ...).
VERSION = "embedded-v2"
SPLITS = ("train", "valid", "test")
VERIFY_TIMEOUT_S = 0.1  # CPU seconds per solution; every solution that passes needs under 5 ms
_HOLDOUT = 0.1           # fraction of problems in each of valid and test


def _paths(out: Path) -> dict[str, Path]:
    return {split: out / f"{split}.jsonl" for split in SPLITS}


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _cached(out: Path, seed: int, n_problems: int) -> bool:
    manifest = out / "manifest.json"
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    same = (meta.get("version"), meta.get("seed"), meta.get("n_problems")) == (VERSION, seed, n_problems)
    files = list(_paths(out).values()) + [out / f"problems_{s}.jsonl" for s in SPLITS]
    return same and all(p.is_file() for p in files)


def _split_sizes(n: int) -> tuple[int, int]:
    if n < 3:
        return 0, 0
    k = max(1, round(n * _HOLDOUT))
    return k, k


def _assign_splits(problems: list[Problem], rng: random.Random) -> dict[int, str]:
    """Problem index -> split. Problems that share their first correct solution (same function
    name, argument names and constants, only worded differently) form one group and go to the
    same split, so no held-out task has its reference code verbatim in train. Groups are
    shuffled, then dealt to test and valid until each holds its share of problems."""
    groups: dict[str, list[int]] = {}
    for idx, p in enumerate(problems):
        groups.setdefault(p.correct[0], []).append(idx)
    members = list(groups.values())  # in order of first appearance: deterministic
    rng.shuffle(members)
    n_valid, n_test = _split_sizes(len(problems))
    split_of: dict[int, str] = {}
    filled = {"test": 0, "valid": 0}
    for group in members:
        split = "test" if filled["test"] < n_test else "valid" if filled["valid"] < n_valid else "train"
        if split != "train":
            filled[split] += len(group)
        for idx in group:
            split_of[idx] = split
    return split_of


def _rows_for(pid: str, p: Problem, codes: list[str], labels: list[bool]) -> list[dict[str, Any]]:
    rows = []
    n_ok = n_bad = 0
    for code, ok in zip(codes, labels):
        if ok:
            task_id, n_ok = f"{pid}_correct_{n_ok}", n_ok + 1
        else:
            task_id, n_bad = f"{pid}_incorrect_{n_bad}", n_bad + 1
        rows.append({"instruction": p.instruction, "input": "", "output": code, "task_id": task_id,
                     "is_correct": bool(ok), "problem_id": pid, "difficulty": p.difficulty})
    return rows


def build_embedded_dataset(out_dir: str | Path, seed: int = 0, n_problems: int = 2000) -> dict[str, Path]:
    """Build (or reuse) the embedded dataset in `out_dir`; returns the train/valid/test paths."""
    if isinstance(n_problems, bool) or not isinstance(n_problems, int) or n_problems < 1:
        raise ConfigError(f"n_problems must be a positive integer, got {n_problems!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    out = Path(out_dir)
    paths = _paths(out)
    if _cached(out, seed, n_problems):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    # Until the new manifest is written, no call may take the half-written files for a cache hit.
    (out / "manifest.json").unlink(missing_ok=True)

    rng = random.Random(seed)
    problems = generate_problems(rng, n_problems)
    codes = [list(p.correct + p.buggy) for p in problems]
    items = [(c, p.test_code) for p, cs in zip(problems, codes) for c in cs]
    flat = iter(run_tests(items, timeout_s=VERIFY_TIMEOUT_S))
    labels = [[next(flat) for _ in cs] for cs in codes]
    # A problem that no solution passes has a broken reference or test: leave it out.
    n_generated = len(problems)
    keep = [i for i, lab in enumerate(labels) if any(lab)]
    problems = [problems[i] for i in keep]
    codes = [codes[i] for i in keep]
    labels = [labels[i] for i in keep]

    split_of = _assign_splits(problems, rng)

    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    probs: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    keys: dict[str, str] = {}
    for idx, p in enumerate(problems):  # generation order within each split
        split = split_of[idx]
        key = instruction_key(p.instruction)
        if keys.setdefault(key, split) != split:  # generate_problems dedupes; this guards it
            raise AssertionError(f"instruction in two splits: {p.instruction!r}")
        pid = f"emb{idx:05d}_{p.family}"
        rows[split].extend(_rows_for(pid, p, codes[idx], labels[idx]))
        probs[split].append({"problem_id": pid, "instruction": p.instruction, "entry_point": p.entry_point,
                             "tests": p.test_code, "difficulty": p.difficulty})

    stats: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        n_ok = sum(r["is_correct"] for r in rows[split])
        by_problem: dict[str, set[bool]] = {}
        for r in rows[split]:
            by_problem.setdefault(r["problem_id"], set()).add(r["is_correct"])
        stats[split] = {"problems": len(probs[split]), "rows": len(rows[split]), "correct": n_ok,
                        "incorrect": len(rows[split]) - n_ok,
                        "problems_with_both": sum(len(v) == 2 for v in by_problem.values())}
        atomic_write_text(paths[split], _jsonl(rows[split]))
        atomic_write_text(out / f"problems_{split}.jsonl", _jsonl(probs[split]))

    families: dict[str, int] = {}
    for p in problems:
        families[p.family] = families.get(p.family, 0) + 1
    manifest = {"version": VERSION, "seed": seed, "n_problems": n_problems,
                "n_problems_generated": n_generated, "n_problems_kept": len(problems), "splits": stats,
                "families": dict(sorted(families.items()))}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return paths


def corpus_texts(out_dir: str | Path) -> Iterator[str]:
    """The instruction and the output of every train row, in file order (tokenizer training)."""
    path = Path(out_dir) / "train.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: not found; build the embedded dataset first")
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts = (row["instruction"], row["output"])
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError.at(path, line_no, f"bad row: {exc}") from None
            yield from texts
