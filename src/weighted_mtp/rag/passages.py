"""A passage is the unit every retriever indexes and every prompt cites. Corpora are JSONL files
with one object per line: {"id": str, "title": str, "text": str}."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from weighted_mtp.errors import DataError
from weighted_mtp.jsonl import iter_jsonl, write_jsonl


@dataclass(frozen=True)
class Passage:
    pid: str
    title: str
    text: str

    def as_text(self) -> str:
        """What a retriever indexes and a prompt shows: the title carries the entity name, which
        is often the only place a short passage names its subject."""
        return f"{self.title}: {self.text}" if self.title else self.text

    def to_json_dict(self) -> dict:
        return {"id": self.pid, "title": self.title, "text": self.text}


def parse_passage(obj: object, path: str | Path, line_no: int) -> Passage:
    if not isinstance(obj, dict):
        raise DataError.at(path, line_no, f"expected a JSON object with id/title/text, got {type(obj).__name__}")
    for name in ("id", "text"):
        if name not in obj:
            raise DataError.at(path, line_no, f"missing field '{name}' (a corpus line is {{\"id\", \"title\", \"text\"}})")
    pid, title, text = obj["id"], obj.get("title", ""), obj["text"]
    if isinstance(pid, int) and not isinstance(pid, bool):
        pid = str(pid)
    for name, value in (("id", pid), ("title", title), ("text", text)):
        if not isinstance(value, str):
            raise DataError.at(path, line_no, f"field '{name}' must be a string, got {type(value).__name__}")
    return Passage(pid=pid, title=title, text=text)


def read_passages(path: str | Path) -> list[Passage]:
    """Every passage of a JSONL corpus; ids must be unique (a retriever answers with ids)."""
    out: list[Passage] = []
    seen: dict[str, int] = {}
    for line_no, obj in iter_jsonl(path, "corpus"):
        passage = parse_passage(obj, path, line_no)
        if passage.pid in seen:
            raise DataError.at(path, line_no, f"duplicate passage id {passage.pid!r} (first on line {seen[passage.pid]})")
        seen[passage.pid] = line_no
        out.append(passage)
    if not out:
        raise DataError(f"{path}: the corpus has no passages")
    return out


def write_passages(path: str | Path, passages: Iterable[Passage]) -> Path:
    return write_jsonl(path, (p.to_json_dict() for p in passages))


def format_passages(passages: Sequence[Passage]) -> str:
    """How passages appear in a prompt: one per line, in retrieval order. A title the text
    already contains is left out: it would only lengthen the prompt (every prompt token is
    paid for in training and at inference)."""
    return "\n".join(p.text if p.title and p.title in p.text else p.as_text() for p in passages)
