import json

import pytest

from weighted_mtp.data.records import Record, iter_records, parse_record, problem_id_from_task_id, read_record
from weighted_mtp.errors import DataError

GOOD = {"instruction": "Add.", "input": "", "output": "print(1)", "task_id": "p1_correct_0",
        "is_correct": True, "problem_id": "p1", "difficulty": 3}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_parse_record_roundtrip_and_extra_fields_ignored():
    rec = parse_record({**GOOD, "source": "x"}, "f.jsonl", 1)
    assert rec == Record(**GOOD)


def test_problem_id_derived_from_legacy_task_id():
    legacy = {k: v for k, v in GOOD.items() if k != "problem_id"}
    assert parse_record({**legacy, "task_id": "1548_E. Gregor_incorrect_12"}, "f", 1).problem_id == "1548_E. Gregor"
    assert problem_id_from_task_id("HumanEval/3") == "HumanEval/3"
    assert problem_id_from_task_id("a_correct_b_correct_7") == "a_correct_b"


def test_malformed_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD), "", json.dumps(GOOD), '{"instruction": '])
    with pytest.raises(DataError) as err:
        list(iter_records(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}:4: invalid JSON:")
    assert "\n" not in msg


@pytest.mark.parametrize("field", ["output", "difficulty", "is_correct", "task_id"])
def test_missing_field(tmp_path, field):
    bad = {k: v for k, v in GOOD.items() if k != field}
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), json.dumps(bad)])
    with pytest.raises(DataError, match=rf"d\.jsonl:2: missing field '{field}'$"):
        list(iter_records(path))


@pytest.mark.parametrize("field,value,message", [
    ("is_correct", "yes", "field 'is_correct' must be bool, got str"),
    ("is_correct", 1, "field 'is_correct' must be bool, got int"),
    ("difficulty", True, "field 'difficulty' must be int, got bool"),
    ("difficulty", 2.5, "field 'difficulty' must be int, got float"),
    ("output", None, "field 'output' must be str, got null"),
    ("problem_id", 7, "field 'problem_id' must be str, got int"),
])
def test_wrong_type(tmp_path, field, value, message):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD)] * 2 + [json.dumps({**GOOD, field: value})])
    with pytest.raises(DataError) as err:
        list(iter_records(path))
    assert str(err.value) == f"{path}:3: {message}"


def test_non_object_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ["[1, 2]"])
    with pytest.raises(DataError, match=r"d\.jsonl:1: expected a JSON object, got list"):
        list(iter_records(path))


def test_read_record_at_offset(tmp_path):
    second = {**GOOD, "task_id": "p1_incorrect_0", "is_correct": False, "output": "naïve ✓"}
    first_line = json.dumps(GOOD, ensure_ascii=False) + "\n"
    path = tmp_path / "d.jsonl"
    path.write_text(first_line + json.dumps(second, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_record(path, len(first_line.encode("utf-8")), 2) == Record(**second)
    assert [r.task_id for r in iter_records(path)] == ["p1_correct_0", "p1_incorrect_0"]
