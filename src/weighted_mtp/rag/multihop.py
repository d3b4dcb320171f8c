"""Loaders for the public multi-hop QA sets in their upstream release formats, so a downloaded
file is used as is: HotpotQA and 2WikiMultiHopQA (a JSON list with "context" as [title,
[sentences]] pairs and "supporting_facts" as [title, sentence index] pairs) and MuSiQue (JSONL
with "paragraphs" flagged "is_supporting"). Every example becomes a MultiHopExample whose
passages are its own context paragraphs, with pid "<qid>::<i>" (i = position in "context", or
MuSiQue's "idx"), and whose supporting_pids name the passages that hold the evidence.

Either container is read for every format (a JSON list, or JSONL with one record a line), so
converted files load too. HotpotQA's fullwiki files are not supported: their context is a
retrieval result that may lack the supporting paragraphs, which is an error here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.rag.passages import Passage

Format = Literal["hotpotqa", "2wiki", "musique", "auto"]
FORMATS = ("hotpotqa", "2wiki", "musique")


@dataclass(frozen=True)
class MultiHopExample:
    qid: str
    question: str
    answers: tuple[str, ...]  # the answer first, then aliases (MuSiQue)
    supporting_pids: tuple[str, ...]
    passages: tuple[Passage, ...]
    source: str  # "hotpotqa" | "2wiki" | "musique"


class _Record:
    """One raw record and where it came from, so every error names the file, the record and its id."""

    def __init__(self, path: Path, obj: Any, index: int, line: int | None, id_key: str):
        self.path, self.obj, self.index, self.line, self.id_key = path, obj, index, line, id_key

    def error(self, message: str) -> DataError:
        ident = self.obj.get(self.id_key) if isinstance(self.obj, dict) else None
        tag = f" ({self.id_key} {ident!r})" if ident is not None else ""
        return DataError(f"{self.path}{self.where()}{tag}: {message}")

    def where(self) -> str:
        """":<line>" in a JSONL file, ": record <list index>" in a JSON list."""
        return f":{self.line}" if self.line is not None else f": record {self.index}"

    def get(self, name: str, kind: type, required: bool = True, obj: Any = None, at: str = "") -> Any:
        """Field `name` of the record (or of `obj`, a part of it that `at` names), checked for type."""
        obj, at = (obj, f"{at}: ") if at else (self.obj, "")
        if not isinstance(obj, dict):
            raise self.error(f"{at}expected a JSON object, got {type(obj).__name__}")
        if name not in obj:
            if not required:
                return None
            raise self.error(f"{at}missing field '{name}'")
        value = obj[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(f"{at}field '{name}' must be {kind.__name__}, got {type(value).__name__}")
        return value


def _read_records(path: Path) -> list[tuple[Any, int, int | None]]:
    """(object, list index, line number or None) for each record of a JSON list or a JSONL file."""
    if not path.is_file():
        raise DataError(f"multi-hop QA file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON: {exc}") from None
        return [(obj, i, None) for i, obj in enumerate(items)]
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append((json.loads(line), len(records), line_no))
            except json.JSONDecodeError as exc:
                raise DataError.at(path, line_no, f"invalid JSON: {exc}") from None
    return records


def _detect(path: Path, first: Any) -> str:
    keys = set(first) if isinstance(first, dict) else set()
    if "paragraphs" in keys:
        return "musique"
    if "evidences" in keys:
        return "2wiki"
    if {"context", "supporting_facts"} <= keys:
        return "hotpotqa"
    raise DataError(f"{path}: cannot tell the format from the first record (keys {sorted(keys)}); "
                    f"pass the format explicitly (one of {', '.join(FORMATS)})")


def _parse_hotpot_like(rec: _Record, source: str) -> MultiHopExample:
    qid, question, answer = rec.get("_id", str), rec.get("question", str), rec.get("answer", str)
    context, facts = rec.get("context", list), rec.get("supporting_facts", list)
    if source == "2wiki":
        rec.get("evidences", list)  # the field that tells a 2Wiki record from a HotpotQA one
    passages = []
    for i, item in enumerate(context):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], list) and all(isinstance(s, str) for s in item[1])):
            raise rec.error(f"context[{i}] must be [title, [sentence, ...]]")
        # HotpotQA sentences carry their own leading space, 2Wiki's do not: strip, then join.
        text = " ".join(s.strip() for s in item[1] if s.strip())
        passages.append(Passage(pid=f"{qid}::{i}", title=item[0], text=text))
    by_title: dict[str, list[str]] = {}
    for p in passages:
        by_title.setdefault(p.title, []).append(p.pid)
    support: dict[str, None] = {}
    for j, fact in enumerate(facts):
        if not (isinstance(fact, list) and len(fact) == 2 and isinstance(fact[0], str)
                and isinstance(fact[1], int) and not isinstance(fact[1], bool)):
            raise rec.error(f"supporting_facts[{j}] must be [title, sentence index]")
        if fact[0] not in by_title:
            raise rec.error(f"supporting fact title {fact[0]!r} is not among the context titles "
                            "(a fullwiki file? use the distractor-setting file)")
        support.update(dict.fromkeys(by_title[fact[0]]))
    return MultiHopExample(qid=qid, question=question, answers=(answer,), supporting_pids=tuple(support),
                           passages=tuple(passages), source=source)


def _parse_musique(rec: _Record, source: str) -> MultiHopExample:
    qid, question, answer = rec.get("id", str), rec.get("question", str), rec.get("answer", str)
    aliases = rec.get("answer_aliases", list, required=False) or []
    if not all(isinstance(a, str) for a in aliases):
        raise rec.error("field 'answer_aliases' must be a list of strings")
    passages, support = [], []
    for j, para in enumerate(rec.get("paragraphs", list)):
        at = f"paragraphs[{j}]"
        idx, title = rec.get("idx", int, obj=para, at=at), rec.get("title", str, obj=para, at=at)
        text = rec.get("paragraph_text", str, obj=para, at=at)
        flag = rec.get("is_supporting", bool, obj=para, at=at)
        pid = f"{qid}::{idx}"
        if any(p.pid == pid for p in passages):
            raise rec.error(f"paragraphs[{j}]: duplicate idx {idx}")
        passages.append(Passage(pid=pid, title=title, text=text))
        if flag:
            support.append(pid)
    return MultiHopExample(qid=qid, question=question, answers=tuple(dict.fromkeys([answer, *aliases])),
                           supporting_pids=tuple(support), passages=tuple(passages), source=source)


_PARSERS = {"hotpotqa": _parse_hotpot_like, "2wiki": _parse_hotpot_like, "musique": _parse_musique}
_ID_KEYS = {"hotpotqa": "_id", "2wiki": "_id", "musique": "id"}


def load_multihop(path: str | Path, fmt: Format = "auto") -> list[MultiHopExample]:
    """Every example of a HotpotQA / 2WikiMultiHopQA / MuSiQue file, in file order; "auto"
    decides the format from the first record."""
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"unknown multi-hop format {fmt!r} (known: auto, {', '.join(FORMATS)})")
    path = Path(path)
    raw = _read_records(path)
    if not raw:
        raise DataError(f"{path}: no examples")
    if fmt == "auto":
        fmt = _detect(path, raw[0][0])
    examples: list[MultiHopExample] = []
    first_seen: dict[str, _Record] = {}
    for obj, index, line in raw:
        rec = _Record(path, obj, index, line, _ID_KEYS[fmt])
        example = _PARSERS[fmt](rec, fmt)
        if example.qid in first_seen:
            raise rec.error(f"duplicate id (first at {path}{first_seen[example.qid].where()})")
        first_seen[example.qid] = rec
        examples.append(example)
    return examples


def corpus_from_examples(examples: Iterable[MultiHopExample]) -> list[Passage]:
    """The retrieval corpus the examples' contexts make together. A paragraph shared by several
    examples (same title and text) appears once, under the pid of its first occurrence; map the
    examples' own pids onto the corpus with `corpus_pids`."""
    corpus: dict[tuple[str, str], Passage] = {}
    pids: dict[str, tuple[str, str]] = {}
    for example in examples:
        for p in example.passages:
            key = (p.title, p.text)
            if pids.setdefault(p.pid, key) != key:
                raise DataError(f"passage id {p.pid!r} names two different paragraphs "
                                "(examples from two files with the same question id?)")
            corpus.setdefault(key, p)
    return list(corpus.values())


def corpus_pids(examples: Iterable[MultiHopExample]) -> dict[str, str]:
    """Each example passage's pid -> the pid the same paragraph has in corpus_from_examples(examples),
    so gold supporting_pids can be compared with ids a retriever returns from that corpus."""
    examples = list(examples)
    canonical = {(p.title, p.text): p.pid for p in corpus_from_examples(examples)}
    return {p.pid: canonical[(p.title, p.text)] for example in examples for p in example.passages}
