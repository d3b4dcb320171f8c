"""A per-file sidecar index so sampling never has to hold a dataset's text in memory.

Samplers need only a few small facts per row (correctness, difficulty, problem, output length);
the training loop then needs the text of the few thousand rows actually sampled. Scanning a
multi-GB CodeContests JSONL on every run is slow, so the scan happens once, its results are
cached next to the file (`<file>.idx.npz`), and later runs read just the sampled lines by seeking
to their byte offsets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from weighted_mtp.data.records import Record, parse_line
from weighted_mtp.errors import DataError
from weighted_mtp.files import atomic_open

# Bump when the arrays or their meaning change, so stale caches are rebuilt, not misread.
INDEX_VERSION = 1
_PROBE_BYTES = 4096


def index_path_for(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".idx.npz")


def _fingerprint(path: Path) -> dict:
    """size + mtime_ns catch ordinary edits cheaply; hashing the first and last 4 KB also catches
    a file replaced within the mtime granularity or copied with its mtime preserved."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_PROBE_BYTES))
        if st.st_size > _PROBE_BYTES:
            f.seek(max(_PROBE_BYTES, st.st_size - _PROBE_BYTES))
            h.update(f.read(_PROBE_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "probe_sha256": h.hexdigest()}


@dataclass(eq=False)
class JsonlIndex:
    """Row metadata for one JSONL file; row i is the i-th non-blank line.

    `built` tells whether this object came from a fresh scan rather than the cache, which is
    what callers (and tests) need to know to trust that the cache is being reused."""

    path: Path
    offsets: np.ndarray        # int64 byte offset of each row's line
    line_lengths: np.ndarray   # int64 byte length of each line, newline included
    line_numbers: np.ndarray   # int64 1-based line number, for error messages
    is_correct: np.ndarray     # bool
    difficulty: np.ndarray     # int64
    problem_index: np.ndarray  # int64 index into `problems`
    output_chars: np.ndarray   # int64 len(record.output) in characters
    problems: list[str]        # problem_id table, in first-seen order
    fingerprint: dict
    built: bool = False

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def n_problems(self) -> int:
        return len(self.problems)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def load_or_build(cls, path: str | Path) -> "JsonlIndex":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: data file not found")
        fingerprint = _fingerprint(path)
        cached = cls._load_cache(path, fingerprint)
        if cached is not None:
            return cached
        index = cls.build(path, fingerprint)
        index._save_cache()
        return index

    @classmethod
    def build(cls, path: str | Path, fingerprint: dict | None = None) -> "JsonlIndex":
        """Scan and validate every line: a malformed row anywhere fails here, with its line,
        instead of surfacing only when a sampler happens to pick it."""
        path = Path(path)
        fingerprint = fingerprint or _fingerprint(path)
        offsets: list[int] = []
        lengths: list[int] = []
        line_numbers: list[int] = []
        correct: list[bool] = []
        difficulty: list[int] = []
        problem_index: list[int] = []
        output_chars: list[int] = []
        problems: dict[str, int] = {}
        offset = 0
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if raw.strip():
                    rec = parse_line(raw, path, line_no)
                    offsets.append(offset)
                    lengths.append(len(raw))
                    line_numbers.append(line_no)
                    correct.append(rec.is_correct)
                    difficulty.append(rec.difficulty)
                    problem_index.append(problems.setdefault(rec.problem_id, len(problems)))
                    output_chars.append(len(rec.output))
                offset += len(raw)
        return cls(
            path=path,
            offsets=np.asarray(offsets, dtype=np.int64),
            line_lengths=np.asarray(lengths, dtype=np.int64),
            line_numbers=np.asarray(line_numbers, dtype=np.int64),
            is_correct=np.asarray(correct, dtype=bool),
            difficulty=np.asarray(difficulty, dtype=np.int64),
            problem_index=np.asarray(problem_index, dtype=np.int64),
            output_chars=np.asarray(output_chars, dtype=np.int64),
            problems=list(problems),
            fingerprint=fingerprint,
            built=True,
        )

    # -- cache ----------------------------------------------------------------------------

    _ARRAYS = ("offsets", "line_lengths", "line_numbers", "is_correct", "difficulty",
               "problem_index", "output_chars")

    @classmethod
    def _load_cache(cls, path: Path, fingerprint: dict) -> "JsonlIndex | None":
        """Any unreadable, stale or foreign cache is treated as absent: the index is a cache,
        so the worst outcome of doubt must be a rebuild, never a wrong row."""
        idx_path = index_path_for(path)
        if not idx_path.is_file():
            return None
        try:
            with np.load(idx_path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("version") != INDEX_VERSION or meta.get("fingerprint") != fingerprint:
                    return None
                arrays = {name: np.array(z[name]) for name in cls._ARRAYS}
                problems = [str(p) for p in z["problems"]]
        except Exception:  # noqa: BLE001 - a corrupt cache of any kind means "rebuild"
            return None
        n = arrays["offsets"].shape[0]
        if any(a.shape != (n,) for a in arrays.values()) or meta.get("n_rows") != n:
            return None
        return cls(path=path, problems=problems, fingerprint=fingerprint, built=False, **arrays)

    def _save_cache(self) -> None:
        """Written to a temp file then renamed, so a concurrent reader (another rank, a killed
        run) never sees half an index. A read-only data directory only costs the cache."""
        idx_path = index_path_for(self.path)
        meta = {"version": INDEX_VERSION, "fingerprint": self.fingerprint, "n_rows": len(self)}
        try:
            with atomic_open(idx_path, "wb") as f:
                np.savez(
                    f,
                    meta=np.array(json.dumps(meta)),
                    problems=np.array(self.problems, dtype=str),
                    **{name: getattr(self, name) for name in self._ARRAYS},
                )
        except OSError:
            pass

    # -- access ---------------------------------------------------------------------------

    def problem_id(self, row: int) -> str:
        return self.problems[int(self.problem_index[row])]

    def read(self, indices: Iterable[int]) -> list[Record]:
        """Records for `indices`, in the order given (duplicates allowed). Lines are read in
        file order so a sample of a huge file costs one forward pass of seeks."""
        rows = [int(i) for i in indices]
        n = len(self)
        for i in rows:
            if not -n <= i < n:
                raise IndexError(f"row {i} out of range for {self.path} ({n} rows)")
        rows = [i % n if n else i for i in rows]
        self._check_unchanged()
        unique = sorted(set(rows), key=lambda i: int(self.offsets[i]))
        by_row: dict[int, Record] = {}
        with open(self.path, "rb") as f:
            for i in unique:
                f.seek(int(self.offsets[i]))
                raw = f.read(int(self.line_lengths[i]))
                by_row[i] = parse_line(raw, self.path, int(self.line_numbers[i]))
        return [by_row[i] for i in rows]

    def read_one(self, row: int) -> Record:
        return self.read([row])[0]

    def _check_unchanged(self) -> None:
        """Offsets are only meaningful for the exact bytes they were taken from; reading a file
        edited since then would silently return the wrong rows."""
        st = self.path.stat()
        if st.st_size != self.fingerprint["size"] or st.st_mtime_ns != self.fingerprint["mtime_ns"]:
            raise DataError(f"{self.path}: file changed since its index was built; reload it")

    def rows_of_problem(self, problem: int | str) -> np.ndarray:
        """Row indices of one problem, by table index or by problem_id."""
        if isinstance(problem, str):
            problem = self.problems.index(problem)
        return np.flatnonzero(self.problem_index == problem)


def read_rows(path: str | Path, indices: Sequence[int]) -> list[Record]:
    """Convenience for one-off reads (scripts, eval): index (cached) then read."""
    return JsonlIndex.load_or_build(path).read(indices)
