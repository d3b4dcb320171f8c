"""Shared pieces for the problem families: the Problem record and small helpers that turn
templates, reference functions and test inputs into instruction text, solution code and asserts.

A family is a function `family(rng: random.Random) -> Problem`. It must draw every random choice
from `rng` (never the global `random`), so a seed fixes the whole dataset. Reference functions
(`ref`) compute the expected values of the asserts here, in the building process; whether a
solution is correct is decided later by running those asserts (see verify.py), never by whether
it came from the `correct` or the `buggy` list.
"""

from __future__ import annotations

import copy
import random
import textwrap
from dataclasses import dataclass
from string import Template
from typing import Any, Callable, Iterable, Mapping, Sequence

LIST_ARGS = ("nums", "values", "xs", "numbers", "items", "data", "arr", "lst", "seq", "vals", "ints")
STR_ARGS = ("s", "text", "word", "string", "line", "txt", "sentence", "msg", "phrase")
INT_ARGS = ("n", "x", "num", "value", "k", "m", "number", "val")

# Every opener is followed by a verb phrase in the third person ("returns ...").
_OPENERS = (
    "Write a Python function `{sig}` that",
    "Implement `{sig}`, a function that",
    "Define a function `{sig}` which",
    "Create a function `{sig}` that",
    "Write `{sig}` so that it",
    "Complete the function `{sig}`: it",
)


@dataclass(frozen=True)
class Problem:
    family: str
    instruction: str
    entry_point: str
    tests: tuple[str, ...]      # one assert statement per item
    correct: tuple[str, ...]    # solutions written to be correct (labels still come from running)
    buggy: tuple[str, ...]      # solutions written with a plausible bug
    difficulty: int

    @property
    def test_code(self) -> str:
        return "\n".join(self.tests) + "\n"


def code(template: str, values: Mapping[str, Any]) -> str:
    """Dedent a `$name` template (string.Template: Python code rarely contains `$`) and fill it."""
    text = textwrap.dedent(template).strip("\n")
    return Template(text).substitute({k: str(v) for k, v in values.items()}) + "\n"


def instruction(rng: random.Random, fn: str, args: Sequence[str], phrases: Sequence[str],
                values: Mapping[str, Any], notes: Sequence[str] = ()) -> str:
    """Opener + one verb phrase (+ maybe one note sentence). Phrases and notes use
    str.format fields filled from `values`."""
    sig = f"{fn}({', '.join(args)})"
    head = rng.choice(_OPENERS).format(sig=sig)
    body = rng.choice(phrases).format(**values)
    text = f"{head} {body}"
    if notes and rng.random() < 0.6:
        text += " " + rng.choice(notes).format(**values)
    return text


def asserts(fn: str, ref: Callable[..., Any], cases: Iterable[tuple]) -> tuple[str, ...]:
    """One `assert fn(args) == expected` per case, expected computed by `ref`. Arguments are
    rendered before `ref` sees a deep copy, so a mutating reference cannot change the test."""
    out: list[str] = []
    seen: set[str] = set()
    for args in cases:
        call = f"{fn}({', '.join(repr(a) for a in args)})"
        if call in seen:
            continue
        seen.add(call)
        expected = ref(*copy.deepcopy(args))
        out.append(f"assert {call} == {expected!r}")
    return tuple(out)


def problem(family: str, instr: str, fn: str, ref: Callable[..., Any], cases: Iterable[tuple],
            correct: Sequence[str], buggy: Sequence[str], values: Mapping[str, Any],
            difficulty: int) -> Problem:
    """Fill the code templates and build the Problem. Duplicate solution texts (a bug that the
    parameters happen to erase textually) are dropped, keeping the first."""
    vals = dict(values)
    vals.setdefault("f", fn)
    seen: set[str] = set()

    def fill(templates: Sequence[str]) -> tuple[str, ...]:
        result = []
        for t in templates:
            c = code(t, vals)
            if c not in seen:
                seen.add(c)
                result.append(c)
        return tuple(result)

    good = fill(correct)
    bad = fill(buggy)
    return Problem(family, instr, fn, asserts(fn, ref, cases), good, bad,
                   max(1, min(5, int(difficulty))))


def rand_ints(rng: random.Random, n_lo: int = 3, n_hi: int = 8, lo: int = -9, hi: int = 20) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(n_lo, n_hi))]


def rand_word(rng: random.Random, lo: int = 2, hi: int = 7, alphabet: str = "abcdefghijklmnoprstuy") -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def rand_sentence(rng: random.Random, lo: int = 2, hi: int = 5) -> str:
    return " ".join(rand_word(rng) for _ in range(rng.randint(lo, hi)))
