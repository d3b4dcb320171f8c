"""The chat prompt format: evaluating an instruct model the way its users talk to it.

An instruct model given a bare HumanEval prompt (raw) tends to close a code fence it never
opened and write prose, or to end its turn at once. EvalPlus's recipe for chat models fixes
that, and is followed here:

* the user turn asks for "a self-contained Python script ... in a markdown code block" and
  quotes the task (its code prompt, e.g. signature + docstring, or the instruction of tasks
  without one) in a fence;
* the assistant turn is opened by the tokenizer's own chat template and begun for the model
  with EvalPlus's response prefix and an opening ```` ```python ```` fence, so the model writes
  code straight away and ends it with a closing fence (the stop sequence) or its end-of-turn;
* the code is the first fenced block of ```` ```python\\n ```` + completion; top-level statements
  other than imports, definitions and assignments (example calls, prints, asserts, an
  ``if __name__ == "__main__":`` block) are dropped, as EvalPlus's sanitiser does, because they
  run before the tests and would fail a correct function on the model's own examples; so is a
  last definition cut off unfinished by the token budget (EvalPlus keeps complete definitions
  only), which would otherwise turn the whole program into a syntax error;
* the program keeps the prompt: the task's code prompt first (its imports, helper functions
  and signature), then the model's code, whose definition of the entry point replaces the
  prompt's stub. Code that is only an indented body continues the prompt's signature.

Pure functions of strings (and a tokenizer with a chat template), tested on a tiny Llama.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from weighted_mtp.data.collate import special_prefix
from weighted_mtp.errors import ConfigError

CHAT_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem "
                    "in a markdown code block:")
CHAT_RESPONSE_PREFIX = ("Below is a Python script with a self-contained function that solves the problem "
                        "and passes corresponding tests:")
CODE_FENCE = "```python\n"
CHAT_STOP = ("\n```",)
_SPLIT = "\x00<wmtp-split>\x00"
_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_user_message(problem: str) -> str:
    return f"{CHAT_INSTRUCTION}\n```\n{problem.strip()}\n```\n"


def chat_prompt(problem: str, tokenizer: Any) -> str:
    """The rendered chat up to the point where the model writes code: the template's user turn,
    then its assistant turn begun with the response prefix and an open ```python fence."""
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConfigError(f"--prompt-format chat: the tokenizer of {name} has no chat template; "
                          "use --prompt-format raw")
    user = {"role": "user", "content": chat_user_message(problem)}
    prefix = f"{CHAT_RESPONSE_PREFIX}\n{CODE_FENCE}"
    rendered = tokenizer.apply_chat_template([user, {"role": "assistant", "content": prefix + _SPLIT}],
                                             tokenize=False)
    if _SPLIT in rendered:
        text = rendered.split(_SPLIT)[0]
    else:  # a template that rewrites assistant turns: open the turn and write the prefix after it
        text = tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True) + prefix
    return _drop_template_bos(text, tokenizer)


def _drop_template_bos(text: str, tokenizer: Any) -> str:
    """`generate` puts the tokenizer's own prefix (BOS) before every prompt; a template that
    writes BOS itself would otherwise give the model two."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and special_prefix(tokenizer):
        return text[len(bos):]
    return text


_FENCE_LINE = re.compile(r"^[ \t]*```", re.MULTILINE)
_OPEN_FENCE = re.compile(r"\A[ \t]*```[\w+-]*[ \t]*\r?\n")


def first_fenced_block(completion: str) -> str:
    """The code of a chat completion: the first fenced block of ```python\\n + completion (a model
    that opens a second fence of its own at the start is forgiven), up to its closing fence or
    the end of the text."""
    body = completion
    m = _OPEN_FENCE.match(body)
    if m is not None:
        body = body[m.end():]
    end = _FENCE_LINE.search(body)
    return body[:end.start()] if end else body


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        return None


def complete_prefix(code: str) -> str:
    """The code up to its last top-level statement that ends before a syntax error: a completion
    cut off by the token budget loses its unfinished last definition, not everything. Code with
    no such prefix is returned unchanged (and fails with its own syntax error)."""
    if _parse(code) is not None:
        return code
    lines = code.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line[:1] not in ("", " ", "\t", "\n", "\r", "#", ")", "]", "}")]
    for cut in reversed(starts[1:]):
        prefix = "".join(lines[:cut])
        if _parse(prefix) is not None:
            return prefix
    return code


def sanitize(code: str) -> str:
    """Keep the top-level imports, functions, classes and assignments; drop the rest (example
    calls, prints, asserts, a __main__ block). A trailing statement cut off mid-way is dropped
    (`complete_prefix`); code that still does not parse is returned unchanged, so it fails in
    the sandbox with its own syntax error."""
    code = complete_prefix(code)
    tree = _parse(code)
    if tree is None:
        return code
    lines = code.splitlines(keepends=True)
    kept = []
    for node in tree.body:
        if isinstance(node, _KEPT):
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            kept.append("".join(lines[start - 1:node.end_lineno]))
    return "\n".join(part.rstrip("\n") + "\n" for part in kept)


def defines(code: str, name: str) -> bool:
    """Whether code defines a top-level function or class called `name` (False if it does not parse)."""
    tree = _parse(code)
    named = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return tree is not None and any(isinstance(n, named) and n.name == name for n in tree.body)


def chat_solution(code_prompt: str, entry_point: str, completion: str, *, program: bool = False) -> str:
    """The program text (before the tests) of a chat completion, the prompt's signature kept:
    the code prompt, then the model's sanitised code. A bare indented body continues the
    prompt's last function. `program`: a stdin/stdout program, whose top-level code is the
    solution, so nothing is dropped."""
    code = first_fenced_block(completion)
    if program:
        return code_prompt + code
    if not code_prompt:
        return sanitize(code)
    if entry_point and not defines(code, entry_point) and code[:1] in (" ", "\t"):
        return code_prompt + code  # the model wrote only the body of the prompt's function
    return code_prompt.rstrip("\n") + "\n\n\n" + sanitize(code)
