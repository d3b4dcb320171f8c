"""One processed row (one solution to one problem) and its strict validation.

Rows are validated when they are read, not when they are used: a bad line found three hours
into training wastes the run, so every reader here fails on the first bad line and names its
file and line number."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from weighted_mtp.errors import DataError

# Legacy files (from the project we replace) have no problem_id; their task_ids encode it.
_TASK_SUFFIX = re.compile(r"_(?:correct|incorrect)_\d+$")

# Field -> accepted type. bool is checked before int because bool is a subclass of int and a
# difficulty of `true` is a data bug, not the number 1.
_FIELDS: dict[str, type] = {
    "instruction": str,
    "input": str,
    "output": str,
    "task_id": str,
    "is_correct": bool,
    "problem_id": str,
    "difficulty": int,
}

# StepER's three abilities: reasoning initialisation (first step), expansion (middle steps) and
# aggregation (final step); their order is the order of the per-task losses.
STEP_TASKS = ("init", "exp", "agg")

_JSON_TYPE_NAMES = {
    str: "str", bool: "bool", int: "int", float: "float", list: "list", dict: "dict", type(None): "null"
}


@dataclass(frozen=True)
class Record:
    instruction: str
    input: str
    output: str
    task_id: str
    is_correct: bool
    problem_id: str
    difficulty: int
    # Optional cached reference CE (`wmtp data ref-ce`): one value per response target token
    # (response + EOS) as tokenized at the max_length it was computed with. Excluded from
    # `_FIELDS`: it is optional, and a list of numbers needs more than a type check.
    ref_ce: tuple[float, ...] | None = None
    # Optional StepER step kind (`init`, `exp` or `agg`): which ability a step-wise distillation
    # row trains, so the objective can keep one loss (and one learned uncertainty) per kind.
    step_task: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The JSONL form `parse_record` reads back; absent optional columns are left out rather
        than written as null, so files without them keep exactly the processed schema."""
        out = {name: getattr(self, name) for name in _FIELDS}
        if self.ref_ce is not None:
            out["ref_ce"] = list(self.ref_ce)
        if self.step_task is not None:
            out["step_task"] = self.step_task
        return out


def problem_id_from_task_id(task_id: str) -> str:
    """Legacy rows group solutions only through their task_id (`<problem>_correct_<n>`); a
    task_id without that suffix is taken to be its own problem."""
    return _TASK_SUFFIX.sub("", task_id)


def _type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def parse_record(obj: Any, path: str | Path, line_no: int) -> Record:
    """Turn one decoded JSON value into a Record. Extra fields are ignored so that files carrying
    upstream metadata still load; missing or mistyped fields are errors, never coerced."""
    if not isinstance(obj, dict):
        raise DataError.at(path, line_no, f"expected a JSON object, got {_type_name(obj)}")
    values: dict[str, Any] = {}
    for name, expected in _FIELDS.items():
        if name not in obj:
            if name == "problem_id" and isinstance(obj.get("task_id"), str):
                values[name] = problem_id_from_task_id(obj["task_id"])
                continue
            raise DataError.at(path, line_no, f"missing field '{name}'")
        value = obj[name]
        ok = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
        if not ok:
            raise DataError.at(
                path, line_no,
                f"field '{name}' must be {_JSON_TYPE_NAMES[expected]}, got {_type_name(value)}",
            )
        values[name] = value
    values["ref_ce"] = _parse_ref_ce(obj.get("ref_ce"), path, line_no)
    step_task = obj.get("step_task")
    if step_task is not None and step_task not in STEP_TASKS:
        raise DataError.at(path, line_no, f"field 'step_task' must be one of {', '.join(STEP_TASKS)}, got {step_task!r}")
    values["step_task"] = step_task
    return Record(**values)


def _parse_ref_ce(value: Any, path: str | Path, line_no: int) -> tuple[float, ...] | None:
    """`null` counts as absent (a Record written with `dataclasses.asdict` carries it).
    Python's json accepts NaN and Infinity, so finiteness is checked here, not left to chance."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise DataError.at(path, line_no, f"field 'ref_ce' must be a list of numbers, got {_type_name(value)}")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise DataError.at(path, line_no, f"field 'ref_ce'[{i}] must be a number, got {_type_name(v)}")
        f = float(v) if isinstance(v, float) or abs(v) < 2**1023 else math.inf  # float(10**400) overflows
        if not math.isfinite(f):
            raise DataError.at(path, line_no, f"field 'ref_ce'[{i}] must be finite, got {v}")
        out.append(f)
    return tuple(out)


def parse_line(raw: bytes | str, path: str | Path, line_no: int) -> Record:
    """Decode and validate one JSONL line; the single place JSON errors become DataErrors."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError.at(path, line_no, f"invalid UTF-8: {exc}") from None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError.at(path, line_no, f"invalid JSON: {exc}") from None
    return parse_record(obj, path, line_no)


def read_record(path: str | Path, offset: int, line_no: int) -> Record:
    """Read the line starting at byte `offset`; `line_no` is only used to name it in errors."""
    with open(path, "rb") as f:
        f.seek(offset)
        return parse_line(f.readline(), path, line_no)


def iter_records(path: str | Path) -> Iterator[Record]:
    """Stream every row. Blank lines (a trailing newline, hand-edited files) are skipped but
    still counted, so line numbers in errors match what an editor shows."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if raw.strip():
                yield parse_line(raw, path, line_no)
