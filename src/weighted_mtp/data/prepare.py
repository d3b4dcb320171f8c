"""Convert local upstream dumps (CodeContests, MBPP, HumanEval as JSONL or JSONL.gz) into the
processed schema of `records.Record`.

Conversion is offline and explicit so training never depends on the hub, and so that what was
dropped (Python 2 solutions, other languages) is counted instead of silently missing.

Ids: one row per solution; `problem_id` is the upstream problem id and `task_id` is
`<problem_id>_correct_<i>` / `<problem_id>_incorrect_<i>`, the scheme legacy files use, so
`records.problem_id_from_task_id` recovers the problem from either. For CodeContests `<i>` is
the solution's position in the upstream list (before filtering), so a row can be traced back.

MBPP and HumanEval have no difficulty rating; their rows get difficulty 0 (`NO_DIFFICULTY`),
which lands them in the lowest difficulty bin."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from weighted_mtp.data.records import Record
from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.files import atomic_open

NO_DIFFICULTY = 0

# deepmind/code_contests `language` enum.
CC_PYTHON2 = 1
CC_PYTHON3 = 3


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line_no, decoded value) for every non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    yield line_no, json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise DataError.at(path, line_no, f"invalid JSON: {exc}") from None
    except (OSError, EOFError) as exc:  # truncated or non-gzip .gz, unreadable file
        raise DataError(f"{path}: cannot read: {exc}") from None


class _Row:
    """Typed field access on one upstream object, raising DataError with file:line."""

    def __init__(self, obj: Any, path: Path, line_no: int):
        if not isinstance(obj, dict):
            raise DataError.at(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
        self.obj, self.path, self.line_no = obj, path, line_no

    def error(self, message: str) -> DataError:
        return DataError.at(self.path, self.line_no, message)

    def get(self, name: str, kind: type | tuple[type, ...], obj: dict | None = None, prefix: str = "") -> Any:
        obj = self.obj if obj is None else obj
        if name not in obj:
            raise self.error(f"missing field '{prefix}{name}'")
        value = obj[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            raise self.error(f"field '{prefix}{name}' must be {expected}, got {type(value).__name__}")
        return value


def _codecontests(row: _Row, stats: dict[str, int]) -> Iterator[Record]:
    name = row.get("name", str)
    description = row.get("description", str)
    difficulty = row.get("difficulty", int)
    stats["problems"] += 1
    for field, is_correct in (("solutions", True), ("incorrect_solutions", False)):
        block = row.get(field, dict)
        languages = row.get("language", list, block, f"{field}.")
        solutions = row.get("solution", list, block, f"{field}.")
        if len(languages) != len(solutions):
            raise row.error(f"field '{field}': {len(languages)} languages for {len(solutions)} solutions")
        kind = "correct" if is_correct else "incorrect"
        for i, (lang, code) in enumerate(zip(languages, solutions)):
            if not isinstance(lang, int) or isinstance(lang, bool) or not isinstance(code, str):
                raise row.error(f"field '{field}' entry {i}: expected (int language, str solution)")
            if lang == CC_PYTHON2:
                stats["dropped_python2"] += 1
            elif lang != CC_PYTHON3:
                stats["dropped_other_language"] += 1
            else:
                yield Record(instruction=description, input="", output=code,
                             task_id=f"{name}_{kind}_{i}", is_correct=is_correct,
                             problem_id=name, difficulty=difficulty)


_DEF = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(")


def mbpp_function_name(code: str, tests: list[str]) -> str | None:
    """The function the tests call. MBPP solutions often define helpers, so the first call in the
    first test that names a function defined in the code wins; then the code's last def."""
    defined = _DEF.findall(code)
    for test in tests[:1]:
        for called in _CALL.findall(test):
            if called in defined:
                return called
    return defined[-1] if defined else None


def _mbpp(row: _Row, stats: dict[str, int]) -> Iterator[Record]:
    task_id = row.get("task_id", int)
    text = row.get("text", str)
    code = row.get("code", str)
    tests = row.get("test_list", list)
    row.get("test_setup_code", str)  # validated for schema fidelity; not part of our rows
    if not all(isinstance(t, str) for t in tests):
        raise row.error("field 'test_list' must be a list of str")
    name = mbpp_function_name(code, tests)
    if name is None:
        raise row.error("cannot find the function name in 'test_list' or 'code'")
    stats["problems"] += 1
    problem_id = f"mbpp/{task_id}"
    yield Record(instruction=f"{text}\n\nThe function should be named '{name}'.", input="",
                 output=code, task_id=f"{problem_id}_correct_0", is_correct=True,
                 problem_id=problem_id, difficulty=NO_DIFFICULTY)


def _humaneval(row: _Row, stats: dict[str, int]) -> Iterator[Record]:
    task_id = row.get("task_id", str)
    prompt = row.get("prompt", str)
    solution = row.get("canonical_solution", str)
    row.get("test", str)
    row.get("entry_point", str)
    stats["problems"] += 1
    yield Record(instruction=prompt, input="", output=solution, task_id=f"{task_id}_correct_0",
                 is_correct=True, problem_id=task_id, difficulty=NO_DIFFICULTY)


CONVERTERS: dict[str, Callable[[_Row, dict[str, int]], Iterator[Record]]] = {
    "codecontests": _codecontests,
    "mbpp": _mbpp,
    "humaneval": _humaneval,
}


def prepare(source: str, input_path: str | Path, output_path: str | Path) -> dict[str, Any]:
    """Convert `input_path` (upstream `source` schema) to processed JSONL at `output_path`.

    The output is plain JSONL (never gzip) because the index reads rows by seeking. It is
    written to a temp file and renamed, so a failed conversion leaves no half file behind for
    the index to pick up."""
    if source not in CONVERTERS:
        raise ConfigError(f"unknown data source '{source}'; expected one of {sorted(CONVERTERS)}")
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.name.endswith(".gz"):
        raise ConfigError(f"{output_path}: processed data must be plain .jsonl (rows are read by seeking)")
    convert = CONVERTERS[source]
    stats = {"problems": 0, "rows": 0, "correct": 0, "incorrect": 0,
             "dropped_python2": 0, "dropped_other_language": 0}
    with atomic_open(output_path) as out:
        for line_no, obj in iter_json_lines(input_path):
            for record in convert(_Row(obj, input_path, line_no), stats):
                out.write(json.dumps(record.to_json_dict(), ensure_ascii=False) + "\n")
                stats["rows"] += 1
                stats["correct" if record.is_correct else "incorrect"] += 1
    return {"source": source, "input": str(input_path), "output": str(output_path), **stats}
