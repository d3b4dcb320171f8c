import gzip
import json

import pytest

from weighted_mtp.data.jsonl_index import JsonlIndex
from weighted_mtp.data.prepare import mbpp_function_name, prepare
from weighted_mtp.data.records import iter_records
from weighted_mtp.errors import ConfigError, DataError


def write_jsonl(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


CC = [
    {"name": "1A. Theatre Square", "description": "Pave the square.", "difficulty": 7,
     "solutions": {"language": [3, 1, 2, 3], "solution": ["print(1)", "print 1", "int main(){}", "print(2)"]},
     "incorrect_solutions": {"language": [1, 3], "solution": ["print 0", "print(0)"]},
     "public_tests": {"input": ["1"], "output": ["1"]}},
    {"name": "2B. Empty", "description": "No python.", "difficulty": 0,
     "solutions": {"language": [2], "solution": ["int main(){}"]},
     "incorrect_solutions": {"language": [], "solution": []}},
]


@pytest.mark.parametrize("gz", [False, True])
def test_codecontests(tmp_path, gz):
    src = write_jsonl(tmp_path / ("cc.jsonl.gz" if gz else "cc.jsonl"), CC, gz=gz)
    out = tmp_path / "processed" / "train.jsonl"
    stats = prepare("codecontests", src, out)
    base = {"instruction": "Pave the square.", "input": "", "problem_id": "1A. Theatre Square", "difficulty": 7}
    assert read_jsonl(out) == [
        {**base, "output": "print(1)", "task_id": "1A. Theatre Square_correct_0", "is_correct": True},
        {**base, "output": "print(2)", "task_id": "1A. Theatre Square_correct_3", "is_correct": True},
        {**base, "output": "print(0)", "task_id": "1A. Theatre Square_incorrect_1", "is_correct": False},
    ]
    assert stats["dropped_python2"] == 2 and stats["dropped_other_language"] == 2
    assert (stats["problems"], stats["rows"], stats["correct"], stats["incorrect"]) == (2, 3, 2, 1)
    # The output is valid processed data, and legacy task_id parsing agrees with problem_id.
    assert [r.problem_id for r in iter_records(out)] == ["1A. Theatre Square"] * 3
    assert len(JsonlIndex.load_or_build(out)) == 3


def test_mbpp(tmp_path):
    rows = [
        {"task_id": 11, "text": "Remove first and last occurrence of a char.",
         "code": "def helper(s):\n    return s\ndef remove_Occ(s, ch):\n    return helper(s)",
         "test_list": ['assert remove_Occ("hello","l") == "heo"'], "test_setup_code": "", "challenge_test_list": []},
        {"task_id": 12, "text": "Similar elements.", "code": "def similar_elements(a, b):\n    return set(a) & set(b)",
         "test_list": ["assert set(similar_elements((3, 4), (4, 5))) == set((4,))"], "test_setup_code": ""},
    ]
    out = tmp_path / "mbpp.jsonl"
    stats = prepare("mbpp", write_jsonl(tmp_path / "mbpp_in.jsonl", rows), out)
    assert read_jsonl(out) == [
        {"instruction": "Remove first and last occurrence of a char.\n\nThe function should be named 'remove_Occ'.",
         "input": "", "output": rows[0]["code"], "task_id": "mbpp/11_correct_0", "is_correct": True,
         "problem_id": "mbpp/11", "difficulty": 0},
        {"instruction": "Similar elements.\n\nThe function should be named 'similar_elements'.",
         "input": "", "output": rows[1]["code"], "task_id": "mbpp/12_correct_0", "is_correct": True,
         "problem_id": "mbpp/12", "difficulty": 0},
    ]
    assert stats["rows"] == 2 and stats["incorrect"] == 0


def test_mbpp_function_name_fallback():
    assert mbpp_function_name("def a(x):\n  pass\n\ndef b(x):\n  return a(x)", []) == "b"
    assert mbpp_function_name("x = 1", ["assert f(1) == 1"]) is None


def test_humaneval(tmp_path):
    row = {"task_id": "HumanEval/0", "prompt": "def has_close(numbers):\n    \"\"\"doc\"\"\"\n",
           "canonical_solution": "    return False\n", "test": "def check(c):\n    assert not c([])\n",
           "entry_point": "has_close"}
    out = tmp_path / "he.jsonl"
    prepare("humaneval", write_jsonl(tmp_path / "he_in.jsonl.gz", [row], gz=True), out)
    assert read_jsonl(out) == [{"instruction": row["prompt"], "input": "", "output": "    return False\n",
                                "task_id": "HumanEval/0_correct_0", "is_correct": True,
                                "problem_id": "HumanEval/0", "difficulty": 0}]


@pytest.mark.parametrize("bad_line,message", [
    ("{not json", "invalid JSON"),
    (json.dumps({k: v for k, v in CC[0].items() if k != "description"}), "missing field 'description'"),
    (json.dumps({**CC[0], "difficulty": "hard"}), "field 'difficulty' must be int, got str"),
    (json.dumps({**CC[0], "solutions": {"language": [3]}}), "missing field 'solutions.solution'"),
    (json.dumps({**CC[0], "solutions": {"language": [3, 3], "solution": ["x"]}}), "2 languages for 1 solutions"),
])
def test_malformed_upstream_line(tmp_path, bad_line, message):
    src = tmp_path / "cc.jsonl"
    src.write_text(json.dumps(CC[0]) + "\n\n" + bad_line + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError) as err:
        prepare("codecontests", src, out)
    assert str(err.value).startswith(f"{src}:3: ") and message in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]  # no partial output or temp file


def test_bad_arguments(tmp_path):
    src = write_jsonl(tmp_path / "x.jsonl", [])
    with pytest.raises(ConfigError, match="unknown data source"):
        prepare("apps", src, tmp_path / "o.jsonl")
    with pytest.raises(ConfigError, match="plain .jsonl"):
        prepare("mbpp", src, tmp_path / "o.jsonl.gz")
    with pytest.raises(DataError, match="cannot read"):
        prepare("mbpp", tmp_path / "missing.jsonl", tmp_path / "o.jsonl")
