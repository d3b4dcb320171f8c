"""The code-pretrained micro base: its corpus (standard-library functions, problem functions,
nothing held out), packing, sampling and schedule, on hand-made inputs. The build itself, end to
end, is in tests/integration/test_code_base_build.py."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from weighted_mtp.data.embedded.families import generate_problems, instruction_key
from weighted_mtp.models.code_base import CodeBaseRecipe, RowSampler, lr_factor, pack
from weighted_mtp.models.code_corpus import (
    HeldOut,
    extra_problem_documents,
    held_out,
    problem_document,
    stdlib_fingerprint,
    stdlib_functions,
    train_split_documents,
)

MODULE = '''"""A module."""
import os


def short(a, b):
    return a + b


class Box:
    def size(self):
        """How big."""
        return len(self.items)

    @property
    def decorated(self):
        return 1


def long_one(x):
''' + "".join(f"    x += {i}\n" for i in range(30)) + "    return x\n"


@pytest.fixture
def fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "site-packages").mkdir()
    (root / "b.py").write_text(MODULE)
    (root / "a.py").write_text("def first():\n    pass\n\n\ndef short(a, b):\n    return a + b\n")
    (root / "pkg" / "c.py").write_text("def broken(:\n")  # does not parse: skipped
    (root / "test" / "t.py").write_text("def in_tests():\n    return 0\n")
    (root / "site-packages" / "s.py").write_text("def installed():\n    return 0\n")
    return root


def test_stdlib_functions_are_short_undecorated_dedented_in_file_order(fake_stdlib):
    assert stdlib_functions(fake_stdlib) == [
        "def first():\n    pass\n",
        "def short(a, b):\n    return a + b\n",            # b.py's identical copy is kept once
        'def size(self):\n    """How big."""\n    return len(self.items)\n',  # a method, dedented
    ]


def test_stdlib_fingerprint_follows_the_files_read(fake_stdlib):
    before = stdlib_fingerprint(fake_stdlib)
    (fake_stdlib / "test" / "t.py").write_text("def changed():\n    return 1\n")  # not read: same digest
    assert stdlib_fingerprint(fake_stdlib) == before
    (fake_stdlib / "a.py").write_text("def first():\n    return 2\n")
    assert stdlib_fingerprint(fake_stdlib) != before


def test_the_real_standard_library_gives_thousands_of_functions():
    functions = stdlib_functions()
    assert len(functions) > 3000
    assert all(f.startswith(("def ", "async def ")) and len(f) <= 600 for f in functions)
    compile("\n".join(functions[:500]), "<stdlib>", "exec")  # each is valid Python on its own


def _write_split(data_dir, split, problems, rows):
    (data_dir / f"problems_{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    (data_dir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    _write_split(d, "valid", [{"instruction": "Write `f(x)` that doubles `x`."}],
                 [{"output": "def f(x):\n    return 2 * x\n", "is_correct": True}])
    _write_split(d, "test", [{"instruction": "Write `g(s)`  that reverses `s`."}],
                 [{"output": "def g(s):\n    return s[::-1]\n", "is_correct": True},
                  {"output": "def g(s):\n    return s\n", "is_correct": False}])
    train = [{"instruction": "Write `h(n)` that squares `n`.", "output": "def h(n):\n    return n * n\n",
              "is_correct": True},
             {"instruction": "Write `h(n)` that squares `n`.", "output": "def h(n):\n    return n + n\n",
              "is_correct": False},
             {"instruction": "Write `k(x)`, twice `x`.", "output": "def f(x):\n    return 2 * x\n",
              "is_correct": True}]  # the same text as a valid solution
    _write_split(d, "train", [{"instruction": "Write `h(n)` that squares `n`."}], train)
    return d


def test_held_out_holds_valid_and_test_instructions_and_every_solution(data_dir):
    h = held_out(data_dir)
    assert h.instructions == {"write `f(x)` that doubles `x`.", "write `g(s)` that reverses `s`."}
    assert h.solutions == {"def f(x):\n    return 2 * x", "def g(s):\n    return s[::-1]", "def g(s):\n    return s"}
    assert h.hides("WRITE `g(s)` that   reverses `s`.", [])      # case and spacing ignored
    assert h.hides(None, ["def g(s):\n    return s\n\n"])           # an incorrect held-out solution too
    assert not h.hides("Write `h(n)` that squares `n`.", ["def h(n):\n    return n * n\n"])


def test_train_documents_are_correct_rows_under_their_instruction_minus_held_out_text(data_dir):
    assert train_split_documents(data_dir, held_out(data_dir)) == [
        "# Write `h(n)` that squares `n`.\ndef h(n):\n    return n * n\n"]


def test_problem_document_puts_the_instruction_on_one_comment_line():
    assert problem_document("Do\n  this  now.", "def f():\n    pass\n\n") == "# Do this now.\ndef f():\n    pass\n"


def test_extra_problems_leave_out_held_out_and_known_problems():
    drawn = generate_problems(random.Random(7), 12)
    hidden, known = drawn[:3], drawn[3:5]
    # Two held out by instruction, one by its first solution's text.
    exclude = HeldOut(frozenset(instruction_key(p.instruction) for p in hidden[:2]),
                      frozenset({hidden[2].correct[0].strip()}))
    seen = {instruction_key(p.instruction) for p in known}
    docs = extra_problem_documents((7,), 12, exclude, seen)
    text = "".join(docs)
    for p in hidden + known:
        assert f"# {' '.join(p.instruction.split())}\n" not in text
    kept = drawn[5:]
    assert {instruction_key(p.instruction) for p in kept} <= seen  # the kept ones are now known
    assert len(docs) >= len(kept)  # at least one verified solution each (families write 2-3)
    assert all(doc.startswith("# ") and "\ndef " in doc for doc in docs)


class CharTokenizer:
    """One id per character ('a' = 10, ...), BOS 1, EOS 2: packing is checkable by hand."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[10 + ord(c) - ord("a") for c in t] for t in texts]}


def test_pack_concatenates_bos_doc_eos_and_cuts_full_rows():
    rows = pack(["ab", "c", "de"], CharTokenizer(), seq_len=4, seed=0)
    order = list(range(3))
    random.Random(0).shuffle(order)
    docs = [["ab", "c", "de"][i] for i in order]
    stream = [t for d in docs for t in (1, *[10 + ord(c) - ord("a") for c in d], 2)]
    assert len(stream) == 11
    assert rows.tolist() == [stream[0:4], stream[4:8]]  # the last 3 tokens do not fill a row


def test_row_sampler_visits_every_row_once_per_pass():
    rows = torch.arange(10).view(5, 2)
    sampler = RowSampler(rows, torch.Generator().manual_seed(0))
    first, second = sampler.take(3), sampler.take(4)  # crosses into the second pass
    seen = torch.cat([first, second])[:5, 0].tolist()
    assert sorted(seen) == [0, 2, 4, 6, 8]


def test_lr_factor_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    r = CodeBaseRecipe(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, r) == pytest.approx(0.1) and lr_factor(9, r) == pytest.approx(1.0)
    assert lr_factor(10, r) == pytest.approx(1.0)
    assert lr_factor(60, r) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, r) == pytest.approx(0.1)
