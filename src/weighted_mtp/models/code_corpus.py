"""The pretraining corpus of `embedded:micro-code`: Python that every machine already has, and
commented functions from embedded problems, with every held-out problem kept out.

Two kinds of documents, both plain Python source:
- stdlib functions: every function and method of the running interpreter's own standard library
  (`sysconfig`'s stdlib directory; test suites, IDLE, lib2to3 and site-packages left out) whose
  source is short, as a module would hold it. They teach Python itself: indentation, `return`,
  loops, comprehensions, names used consistently.
- problem functions: `# <instruction>` followed by a solution, for the training split of the
  embedded dataset and for extra problems drawn from the same families with other seeds. They
  teach reading a specification and writing the function it names, the skill the policy is
  then fine-tuned and evaluated on.

Held out: no document may hold a valid or test problem of the embedded dataset. An extra problem
is dropped when its instruction matches a held-out instruction (case and spacing ignored) or any
of its solutions is, character for character, a held-out solution (correct or not); a stdlib
function equal to a held-out solution is dropped too. The split of the embedded dataset groups
problems by reference solution for the same reason (`data/embedded/build.py`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

from weighted_mtp.data.embedded.families import generate_problems, instruction_key
from weighted_mtp.data.embedded.verify import run_tests
from weighted_mtp.errors import DataError

# Directories of the standard library that are not library code (or are huge test data).
STDLIB_SKIP = ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo",
               "__pycache__", "ensurepip", "config-")
MAX_FUNCTION_CHARS = 600   # about the length of the longest embedded solution, times two
MAX_FUNCTION_LINES = 24
VERIFY_TIMEOUT_S = 0.1


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _skipped(path: Path, root: Path) -> bool:
    return any(part.startswith(STDLIB_SKIP) for part in path.relative_to(root).parts[:-1])


def _stdlib_files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*.py")) if not _skipped(p, root)]


def stdlib_fingerprint(root: Path | None = None) -> str:
    """A digest of the source files `stdlib_functions` reads (paths and bytes): the cache key's
    stand-in for the corpus, cheap enough to compute on every lookup."""
    root = Path(root) if root is not None else stdlib_root()
    h = hashlib.sha256()
    for path in _stdlib_files(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"unreadable")
        h.update(b"\1")
    return h.hexdigest()[:16]


def stdlib_functions(root: Path | None = None, max_chars: int = MAX_FUNCTION_CHARS,
                     max_lines: int = MAX_FUNCTION_LINES) -> list[str]:
    """Short functions and methods of the standard library, dedented, in a fixed order (files
    sorted by path, functions in source order); duplicates kept once. A file that does not parse
    under this interpreter (a few are templates or Python 2 samples) is skipped."""
    root = Path(root) if root is not None else stdlib_root()
    out: list[str] = []
    seen: set[str] = set()
    for path in _stdlib_files(root):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.decorator_list:
                continue
            n_lines = node.end_lineno - node.lineno + 1
            if n_lines > max_lines:
                continue
            text = textwrap.dedent("".join(lines[node.lineno - 1:node.end_lineno]))
            if len(text) > max_chars or text in seen or not text.startswith(("def ", "async def ")):
                continue
            seen.add(text)
            out.append(text if text.endswith("\n") else text + "\n")
    return out


def problem_document(instruction: str, solution: str) -> str:
    """A specification as a comment, then the function: the order of an Alpaca prompt (the
    instruction names the function and its arguments before the code), in plain Python."""
    return f"# {' '.join(instruction.split())}\n{solution.rstrip()}\n"


@dataclass(frozen=True)
class HeldOut:
    """What no pretraining document may contain: the valid and test problems' instructions
    (normalised) and every one of their solutions (stripped)."""

    instructions: frozenset[str]
    solutions: frozenset[str]

    def hides(self, instruction: str | None, solutions: list[str]) -> bool:
        if instruction is not None and instruction_key(instruction) in self.instructions:
            return True
        return any(s.strip() in self.solutions for s in solutions)


def held_out(data_dir: Path, splits: tuple[str, ...] = ("valid", "test")) -> HeldOut:
    instructions, solutions = set(), set()
    for split in splits:
        for name, field, into in ((f"problems_{split}.jsonl", "instruction", instructions),
                                  (f"{split}.jsonl", "output", solutions)):
            path = data_dir / name
            if not path.is_file():
                raise DataError(f"{path}: not found; build the embedded dataset first")
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        value = json.loads(line)[field]
                    except (ValueError, KeyError, TypeError) as e:
                        raise DataError.at(path, line_no, f"bad row: {e}") from None
                    into.add(instruction_key(value) if field == "instruction" else value.strip())
    return HeldOut(frozenset(instructions), frozenset(solutions))


def train_split_documents(data_dir: Path, exclude: HeldOut) -> list[str]:
    """The training split's correct solutions, each under its instruction, in file order. A
    training solution can be, character for character, a held-out problem's solution (the split
    keeps apart problems that share their *first* solution only): such rows are left out."""
    path = data_dir / "train.jsonl"
    docs = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row["is_correct"] and not exclude.hides(None, [row["output"]]):
                docs.append(problem_document(row["instruction"], row["output"]))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError.at(path, line_no, f"bad row: {e}") from None
    return docs


def extra_problem_documents(seeds: tuple[int, ...], per_seed: int, exclude: HeldOut,
                            known_instructions: set[str]) -> list[str]:
    """Problems drawn with each seed in `seeds` (`per_seed` each, the embedded generator), minus
    held-out ones and instructions already in `known_instructions` (updated in place); each
    solution that passes its problem's tests (run in worker subprocesses) becomes a document."""
    problems = []
    for seed in seeds:
        for p in generate_problems(random.Random(seed), per_seed):
            key = instruction_key(p.instruction)
            if key in known_instructions or exclude.hides(p.instruction, list(p.correct + p.buggy)):
                continue
            known_instructions.add(key)
            problems.append(p)
    items = [(c, p.test_code) for p in problems for c in p.correct]
    passed = iter(run_tests(items, timeout_s=VERIFY_TIMEOUT_S))
    return [problem_document(p.instruction, c) for p in problems for c in p.correct if next(passed)]


def train_instructions(data_dir: Path) -> set[str]:
    path = data_dir / "problems_train.jsonl"
    return {instruction_key(json.loads(line)["instruction"])
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
