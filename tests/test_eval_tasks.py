"""Benchmarks as tasks: reference solutions pass and broken ones fail through the same programs
the scorer runs; MBPP and CodeContests files in the upstream schema load and judge correctly."""

from __future__ import annotations

import json

import pytest

from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.eval.sandbox import SandboxLimits, run_programs
from weighted_mtp.eval.tasks import (
    build_program,
    build_prompt,
    load_benchmark,
    program_stdin,
    strip_code_fence,
)

LIMITS = SandboxLimits(cpu_s=5, wall_s=15)


def test_humaneval_canonical_pass_and_corrupted_fail():
    bench = load_benchmark("humaneval")
    assert len(bench.tasks) == 164 and bench.n_total == 164 and not bench.subset
    good = [build_program(t, t.canonical_solution, "raw") for t in bench.tasks]
    # a body that raises on every call: every HumanEval check calls the candidate
    bad = [build_program(t, "    raise AssertionError('corrupted')\n", "raw") for t in bench.tasks]
    results = run_programs(good + bad, LIMITS, workers=2)
    failed = [(t.task_id, r.status, r.stderr_tail[-300:]) for t, r in zip(bench.tasks, results[:164]) if not r.passed]
    assert failed == []
    passed_bad = [t.task_id for t, r in zip(bench.tasks, results[164:]) if r.status != "failed"]
    assert passed_bad == []


def test_humaneval_prompts():
    task = load_benchmark("humaneval", limit=1).tasks[0]
    assert build_prompt(task, "raw") == task.code_prompt
    alpaca = build_prompt(task, "alpaca")
    assert "### Instruction:\nComplete the following Python function" in alpaca
    assert f"### Input:\n{task.code_prompt}" in alpaca and alpaca.endswith("### Response:\n")
    # alpaca completions are whole functions; a fenced one is unwrapped and overrides the stub
    whole = "```python\n" + task.code_prompt + task.canonical_solution + "```\nThis works because..."
    program = build_program(task, whole, "alpaca")
    assert "```" not in program and program.endswith(task.test)
    with pytest.raises(ConfigError, match="--prompt-format"):
        build_prompt(task, "chatml")


def test_strip_code_fence():
    assert strip_code_fence("```python\nx = 1\n```\ntext") == "x = 1\n"
    assert strip_code_fence("```\nx = 1\n") == "x = 1\n"
    assert strip_code_fence("    return x\n") == "    return x\n"


def test_limit_marks_a_subset():
    bench = load_benchmark("humaneval", limit=10)
    assert bench.subset and len(bench.tasks) == 10 and bench.n_total == 164
    assert not load_benchmark("humaneval", limit=500).subset
    with pytest.raises(ConfigError, match="--limit"):
        load_benchmark("humaneval", limit=0)


def test_embedded_canonical_pass_in_both_formats():
    bench = load_benchmark("embedded", split="test", limit=20)
    assert bench.subset and bench.n_total > 20
    tasks = [t for t in bench.tasks if t.canonical_solution]
    assert len(tasks) == 20 and all(t.code_prompt == "" and t.test for t in tasks)
    raw = build_prompt(tasks[0], "raw")
    assert raw.startswith('"""\n') and tasks[0].instruction in raw
    assert "### Input:" not in build_prompt(tasks[0], "alpaca")  # same template as the training rows
    programs = [build_program(t, t.canonical_solution, fmt) for fmt in ("raw", "alpaca") for t in tasks]
    wrong = [build_program(t, f"def {t.entry_point}(*args, **kwargs):\n    return None\n", "alpaca") for t in tasks]
    results = run_programs(programs + wrong, LIMITS, workers=2)
    assert [r.status for r in results[:40]] == ["passed"] * 40
    assert all(r.status == "failed" for r in results[40:])


def test_embedded_split_is_checked():
    with pytest.raises(ConfigError, match="--split"):
        load_benchmark("embedded", split="train")


MBPP_ROWS = [
    {"task_id": 11, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
     "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "test_setup_code": "",
     "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function for the hypotenuse.",
     "code": "def hyp(a, b):\n    return math.sqrt(a * a + b * b)",
     "test_list": ["assert hyp(3, 4) == 5.0"], "test_setup_code": "import math", "challenge_test_list": []},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mbpp_file(tmp_path):
    bench = load_benchmark("mbpp", path=write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    assert [t.task_id for t in bench.tasks] == ["mbpp/11", "mbpp/12"]
    t = bench.tasks[0]
    assert t.instruction.endswith("Your code should pass these tests:\nassert add(1, 2) == 3\nassert add(-1, 1) == 0")
    assert t.entry_point == "add" and t.code_prompt == ""
    programs = [build_program(t, t.canonical_solution, "alpaca") for t in bench.tasks]
    programs += [build_program(bench.tasks[0], "def add(a, b):\n    return a - b", "alpaca"),
                 build_program(bench.tasks[1], "def hyp(a, b):\n    return a + b", "alpaca")]
    assert [r.status for r in run_programs(programs, LIMITS)] == ["passed", "passed", "failed", "failed"]


def test_mbpp_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps(MBPP_ROWS[0]) + "\n" + json.dumps({"task_id": 3, "text": "x"}) + "\n")
    with pytest.raises(DataError, match=r"mbpp.jsonl:2: missing field 'code'"):
        load_benchmark("mbpp", path=path)
    with pytest.raises(ConfigError, match="--benchmark-file"):
        load_benchmark("mbpp")


SUM_OK = "a, b = map(int, input().split())\nprint(a + b)\n"
SUM_BAD = "a, b = map(int, input().split())\nprint(a - b)\n"
# reads fd 0 through sys.stdin.buffer and open(0), runs main in a thread, calls exit()
TOTAL_OK = ("import sys, threading\n"
            "def main():\n"
            "    data = sys.stdin.buffer.read().split()\n"
            "    n = int(data[0])\n"
            "    sys.stdout.write(str(sum(map(int, data[1:n + 1]))) + '\\n')\n"
            "threading.Thread(target=main).start()\n")
TOTAL_OK_2 = "data = open(0).read().split()\nprint(sum(map(int, data[1:])))\nexit()\n"
TOTAL_BAD = "data = open(0).read().split()\nprint(sum(map(int, data[1:-1])))\n"

CC_ROWS = [
    {"name": "1_A. Sum", "description": "Print a + b.", "difficulty": 7,
     "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
     "private_tests": {"input": ["10 -3\n"], "output": ["7\n"]},
     "generated_tests": {"input": ["0 0\n"], "output": ["0"]},
     "solutions": {"language": [1, 3], "solution": ["print input()", SUM_OK]},
     "incorrect_solutions": {"language": [3], "solution": [SUM_BAD]}},
    {"name": "2_B. Total", "description": "Print the sum of n numbers.", "difficulty": 7,
     "public_tests": {"input": ["3\n1 2 3\n"], "output": ["6\n"]},
     "private_tests": {"input": ["2\n5\n5\n"], "output": ["10  \n"]},
     "generated_tests": {"input": [], "output": []},
     "solutions": {"language": [3], "solution": [TOTAL_OK]},
     "incorrect_solutions": {"language": [], "solution": []}},
]


def test_codecontests_file(tmp_path):
    bench = load_benchmark("codecontests", path=write_jsonl(tmp_path / "cc.jsonl", CC_ROWS))
    first, second = bench.tasks
    assert first.task_id == "1_A. Sum" and first.canonical_solution == SUM_OK and first.test == ""
    assert first.stdin_tests == [("1 2\n", "3\n"), ("10 -3\n", "7\n"), ("0 0\n", "0")]
    cases = [(first, SUM_OK), (first, SUM_BAD), (second, TOTAL_OK), (second, TOTAL_OK_2), (second, TOTAL_BAD),
             (second, "```python\n" + TOTAL_OK_2 + "```\n")]
    programs = [build_program(t, c, "alpaca") for t, c in cases]
    results = run_programs(programs, LIMITS, stdins=[program_stdin(t) for t, _ in cases])
    assert [r.status for r in results] == ["passed", "failed", "passed", "passed", "failed", "passed"], results
    assert "test 1 of 3: wrong answer" in results[1].stderr_tail
    crash = run_programs([build_program(first, "print(1 // 0)", "raw")], LIMITS, stdins=[program_stdin(first)])[0]
    assert crash.status == "failed" and "test 1 of 3: ZeroDivisionError: integer division or modulo by zero" \
        in crash.stderr_tail


def test_codecontests_problem_without_tests(tmp_path):
    row = dict(CC_ROWS[0], public_tests={"input": [], "output": []}, private_tests={"input": [], "output": []},
               generated_tests={"input": [], "output": []})
    with pytest.raises(DataError, match=r"cc.jsonl:1: .*no tests"):
        load_benchmark("codecontests", path=write_jsonl(tmp_path / "cc.jsonl", [row]))
