"""JSONL reading and writing shared by every data format here: reads name the file and line of
the first bad line; writes go to a temporary name and are renamed, so a crash never leaves a
half-written file where a good one was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from weighted_mtp.errors import DataError
from weighted_mtp.files import atomic_open


def iter_jsonl(path: str | Path, what: str = "data") -> Iterator[tuple[int, Any]]:
    """(line number, decoded value) for every non-blank line; a missing file or invalid JSON is a
    DataError naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError.at(path, line_no, f"invalid JSON: {exc}") from None


def write_jsonl(path: str | Path, objects: Iterable[Any]) -> Path:
    """One JSON object per line (UTF-8, non-ASCII kept), written atomically; returns `path`."""
    with atomic_open(path) as f:
        for obj in objects:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return Path(path)
