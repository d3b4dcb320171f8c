"""Questions from any text, offline: each question is one of the chunk's own sentences with an
answer span (a date, a year, an amount or number, or a name) replaced by a wh-phrase, as in
extractive cloze QA ("The ship was launched in 1921." -> "The ship was launched in which year?",
answer "1921"). No teacher, no model: it runs before any model is built, on any PDF, and every
answer is copied from its chunk, so the oracle scenario can always answer it.

The questions are echo questions rather than fluent ones (no subject-auxiliary inversion, which
needs a parser); that is enough for a reader of the chunk and for retrieval by meaning, and the
generated file is there to be read and edited (`qa_pairs.jsonl`, passed back with qa.source: file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from weighted_mtp.clara.pdf import Chunk, split_sentences
from weighted_mtp.clara.qa_pairs import QAPair, content_words
from weighted_mtp.errors import ConfigError
from weighted_mtp.rag.qa_metrics import normalize_answer

_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_DATE = re.compile(rf"\b(?:(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}|\d{{1,2}} (?:{_MONTHS})\.? \d{{4}}|"
                   rf"(?:{_MONTHS}) \d{{4}})\b")
_MONTHS_FULL = "January|February|March|April|June|July|August|September|October|November|December"  # not "May"
_YEAR = re.compile(r"(?<![\d$.,])\b(1[0-9]{3}|20[0-9]{2})\b(?![\d%]|[.,]\d)")
_MONEY = re.compile(r"[$\u00a3\u20ac]\d[\d,]*(?:\.\d+)?(?: (?:million|billion|thousand))?")
_NUMBER = re.compile(r"(?<![\w$.])\d[\d,]*(?:\.\d+)?(?: (?:million|billion|thousand|hundred))?%?(?![\w.]\d)")
# A name: capitalised words, joined by a few lower-case connectors ("Bank of England").
_CAP = r"(?:[A-Z][\w'\-]*\.?|[A-Z]\.)"
_NAME = re.compile(rf"\b{_CAP}(?:\s+(?:(?:of|the|de|van|von|and|for)\s+)?{_CAP})*")
_PERSON_TITLES = frozenset("mr mrs ms dr prof sir lady lord st".split())
_PRONOUNS = frozenset("it its he she they them his her their this these those there here we our you i".split())
# Capitalised words that are not names when they start a sentence (or stand alone).
_NOT_NAMES = frozenset("""a an the this that these those it its he she they we you i in on at by for from to of
and but or so yet if when while after before during since until although because as with without however
today yesterday tomorrow nobody everybody someone somebody nothing everything some many most few all both
each every no not one two three there here what who why how where which was were is are critics""".split())
_LOCATION_PREPS = ("in", "at", "near", "inside", "outside")
_DIRECTION_PREPS = ("from", "to", "into", "towards", "across", "through")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str  # date | year | money | month | name | number

    def text(self, sentence: str) -> str:
        return sentence[self.start:self.end]


# Which answer kinds to prefer: dates and numbers are unambiguous spans; a name is only kept when
# it is not the sentence's first word alone (a capitalised sentence start is not evidence of a name).
_PRIORITY = {"date": 0, "year": 1, "money": 2, "month": 3, "name": 4, "number": 5}


def answer_spans(sentence: str) -> list[Span]:
    """Candidate answers of one sentence, in priority order then position; spans do not overlap
    (a year inside a date belongs to the date)."""
    found: list[Span] = []

    def add(kind: str, start: int, end: int) -> None:
        if not any(s.start < end and start < s.end for s in found):
            found.append(Span(start, end, kind))

    for m in _DATE.finditer(sentence):
        add("date", m.start(), m.end())
    for m in re.finditer(rf"\b(?:{_MONTHS_FULL})\b", sentence):
        add("month", m.start(), m.end())
    for m in _YEAR.finditer(sentence):
        add("year", m.start(1), m.end(1))
    for m in _MONEY.finditer(sentence):
        add("money", m.start(), m.end())
    for m in _NAME.finditer(sentence):
        start, end = _trim_name(sentence, m.start(), m.end())
        if start is not None:
            add("name", start, end)
    for m in _NUMBER.finditer(sentence):
        add("number", m.start(), m.end())
    return sorted(found, key=lambda s: (_PRIORITY[s.kind], s.start))


def _trim_name(sentence: str, start: int, end: int) -> tuple[int | None, int]:
    """The name inside a capitalised run: leading non-name words ("The", "In", "After") and a
    trailing period that ends the sentence are cut off; None when nothing name-like is left."""
    words = sentence[start:end].split()
    while words and words[0].lower().rstrip(".") in _NOT_NAMES:
        start = sentence.index(words[0], start) + len(words[0])
        start += len(sentence[start:]) - len(sentence[start:].lstrip())
        words = words[1:]
    while words and words[-1].lower() in ("of", "the", "de", "van", "von", "and", "for"):
        words = words[:-1]
    if not words:
        return None, end
    end = start + len(" ".join(words)) if sentence[start:].startswith(" ".join(words)) else end
    text = sentence[start:end]
    if text.endswith(".") and not re.search(r"\b[A-Z]\.$", text) and text.rstrip(".").lower() not in _PERSON_TITLES:
        text, end = text[:-1], end - 1
    if start == 0 and len(text.split()) == 1:
        return None, end  # "Yesterday", "Rome": a one-word sentence start is too often not a name
    if not any(ch.isalpha() for ch in text) or text.lower() in _NOT_NAMES:
        return None, end
    return start, end


_PLACE_WORDS = frozenset("""sea river bank company university street city mountain mountains lake ocean island islands
park press shipping inc ltd museum church school college hall bridge road square republic kingdom empire airport
station state states county valley bay gulf desert forest institute society council party group corporation""".split())


def _looks_like_person(name: str) -> bool:
    """A title ("Dr. Ossa Ternel"), or two or three capitalised words none of which names a place
    or an organisation ("Dolan Mirs", not "North Sea" or "Vantor Shipping")."""
    words = name.split()
    if words[0].lower().rstrip(".") in _PERSON_TITLES:
        return True
    return 2 <= len(words) <= 3 and all(w[:1].isupper() and w.replace("-", "").replace(".", "").isalpha()
                                        and w.lower() not in _PLACE_WORDS for w in words)


def _wh(sentence: str, span: Span) -> tuple[int, int, str]:
    """(start, end, phrase): the part of the sentence to replace and the wh-phrase replacing it.
    A determiner before the span goes with it ("the 1,200 copies" -> "how many copies"); so does
    the preposition before a date or a place ("in March 1954" -> "when", "in Paris" -> "where")."""
    words = sentence[:span.start].split()
    start, end = span.start, span.end
    if words and words[-1].lower() in ("the", "a", "an") and span.kind in ("name", "number"):
        start = len(sentence[:span.start].rstrip()) - len(words[-1])
        words = words[:-1]
    prev = words[-1].lower() if words else ""
    prep_start = sentence.rfind(words[-1], 0, start) if words else 0
    if span.kind == "date":
        return (prep_start, end, "when") if prev in ("on", "in") else (start, end, "what date")
    if span.kind == "year":
        if prev in ("in", "since", "until", "by", "from", "after", "before"):
            return prep_start, end, f"{prev} which year"
        return start, end, "which year"
    if span.kind == "money":
        return start, end, "how much"
    if span.kind == "month":
        return (prep_start, end, f"{prev} which month") if prev in ("in", "since", "until", "by") else (
            start, end, "which month")
    if span.kind == "number":
        after = sentence[end:].split()
        nxt = after[0].strip(",.;:!?") if after else ""
        if nxt.isalpha() and nxt.islower() and nxt not in _NOT_NAMES:
            return start, end, "how many"
        return start, end, "what number"
    name = span.text(sentence)
    person = _looks_like_person(name)
    if prev in _LOCATION_PREPS and not person:
        return prep_start, end, "where"
    if prev in _DIRECTION_PREPS and not person:
        return start, end, "where"
    if prev in ("by", "with", "for", "from", "to", "of", "about", "under", "after", "before") and person:
        return start, end, "whom"
    return start, end, "who" if person else "what"


def cloze_question(sentence: str, span: Span) -> str:
    """The sentence with the span replaced by its wh-phrase, ending in a question mark."""
    start, end, phrase = _wh(sentence, span)
    if start == 0:
        phrase = phrase[0].upper() + phrase[1:]
    question = f"{sentence[:start]}{phrase}{sentence[end:]}"
    question = re.sub(r"[\s.!?;:,]+$", "", question.strip()).strip()
    return " ".join(question.split()) + "?"


def _usable(sentence: str) -> bool:
    words = sentence.split()
    if not 5 <= len(words) <= 60 or not re.search(r"[.!]['\")\]\u2019\u201d]*$", sentence):
        return False  # a heading, a fragment or a run-on: no question to ask
    return words[0].lower().strip("\"'(") not in _PRONOUNS  # "It was founded in 1921": founded what?


class ClozeQAGenerator:
    """Up to `n_per_chunk` questions per chunk, one per sentence, from the chunk's first sentences
    that have an answer span. A span is skipped when its answer text occurs twice in the sentence
    (the question would give it away) or normalises to nothing."""

    def __init__(self, n_per_chunk: int = 2):
        if isinstance(n_per_chunk, bool) or not isinstance(n_per_chunk, int) or n_per_chunk < 1:
            raise ConfigError(f"n_per_chunk must be an integer >= 1, got {n_per_chunk!r}")
        self.n_per_chunk = n_per_chunk

    def pair(self, sentence: str, chunk_id: str | None = None) -> QAPair | None:
        if not _usable(sentence):
            return None
        for span in answer_spans(sentence):
            answer = span.text(sentence)
            if sentence.count(answer) != 1 or not normalize_answer(answer):
                continue
            question = cloze_question(sentence, span)
            if f" {normalize_answer(answer)} " in f" {normalize_answer(question)} " or len(question.split()) < 4:
                continue
            return QAPair(question, answer, chunk_id, content_words(answer) or (answer,))
        return None

    def generate(self, chunks: Sequence[Chunk]) -> list[QAPair]:
        pairs = []
        for chunk in chunks:
            kept = 0
            for sentence in chunk.sentences or split_sentences(chunk.text):
                if kept == self.n_per_chunk:
                    break
                p = self.pair(sentence, chunk.cid)
                if p is not None:
                    pairs.append(p)
                    kept += 1
        return pairs
