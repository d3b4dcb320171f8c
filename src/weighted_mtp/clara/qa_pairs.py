"""Question-answer pairs to evaluate a model on one PDF: read from a JSONL file the user wrote,
or generated from the PDF's chunks, either by parsing the embedded world's fact sentences
(exact, for the demo) or by asking a chat teacher. A generated pair is only kept if its answer
appears in its chunk, so every question is answerable from the document (the oracle scenario
of the report would otherwise be scored against answers the model could never see)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from weighted_mtp.clara.pdf import Chunk, split_sentences
from weighted_mtp.errors import ConfigError, DataError, WMTPError
from weighted_mtp.jsonl import iter_jsonl, write_jsonl
from weighted_mtp.rag.qa_metrics import normalize_answer


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    chunk_id: str | None = None  # the chunk that answers it: the gold for Recall@k and the oracle
    keywords: tuple[str, ...] = ()


# Function words a keyword should not be: "the" in a prediction says nothing about its answer.
STOPWORDS = frozenset("""a an the and or but of in on at to for from by with as is are was were be been
being it its this that these those he she they them his her their who whom which what when where why how
do does did has have had not no than then so such into onto over under about after before during""".split())


def content_words(text: str) -> tuple[str, ...]:
    """The normalised words of `text` (SQuAD normalisation) that are not function words, in order, once each."""
    return tuple(dict.fromkeys(w for w in normalize_answer(text).split() if w not in STOPWORDS))


# ------------------------------------------------------------------------------------- files

def _parse_pair(obj: object, path: Path, line_no: int) -> QAPair:
    if not isinstance(obj, dict):
        raise DataError.at(path, line_no, f"expected a JSON object with question/answer, got {type(obj).__name__}")
    unknown = set(obj) - {"question", "answer", "chunk_id", "keywords"}
    if unknown:
        raise DataError.at(path, line_no, f"unknown field(s) {sorted(unknown)} (a QA line is "
                                          '{"question", "answer", "chunk_id"?, "keywords"?})')
    for name in ("question", "answer"):
        if not isinstance(obj.get(name), str) or not obj[name].strip():
            raise DataError.at(path, line_no, f"field '{name}' must be a non-empty string, got {obj.get(name)!r}")
    chunk_id = obj.get("chunk_id")
    if chunk_id is not None and not isinstance(chunk_id, str):
        raise DataError.at(path, line_no, f"field 'chunk_id' must be a string or null, got {chunk_id!r}")
    if "keywords" in obj:
        keywords = obj["keywords"]
        if not isinstance(keywords, list) or not all(isinstance(k, str) and k.strip() for k in keywords):
            raise DataError.at(path, line_no, f"field 'keywords' must be a list of non-empty strings, got {keywords!r}")
        keywords = tuple(keywords)
    else:
        keywords = content_words(obj["answer"])  # the keyword-overlap metric needs some
    return QAPair(obj["question"], obj["answer"], chunk_id, keywords)


def read_qa_jsonl(path: str | Path) -> list[QAPair]:
    """Every pair of a JSONL file, one {"question", "answer", "chunk_id"?, "keywords"?} per line.
    Missing keywords default to the content words of the answer."""
    pairs = [_parse_pair(obj, path, line_no) for line_no, obj in iter_jsonl(path, "QA")]
    if not pairs:
        raise DataError(f"{path}: no QA pairs")
    return pairs


def write_qa_jsonl(path: str | Path, pairs: Iterable[QAPair]) -> Path:
    return write_jsonl(path, ({"question": p.question, "answer": p.answer, "chunk_id": p.chunk_id,
                               "keywords": list(p.keywords)} for p in pairs))


# -------------------------------------------------------------------------------- generators

class QAGenerator(Protocol):
    def generate(self, chunks: Sequence[Chunk]) -> list[QAPair]:
        """Pairs for the chunks, in chunk order; each names the chunk it came from."""
        ...


# One question per relation of the embedded world (world.facts.RELATIONS); the answer
# is the fact's object.
WORLD_QUESTIONS = {
    "director": "Who directed {s}?",
    "author": "Who wrote {s}?",
    "birthplace": "Where was {s} born?",
    "mother": "Who is the mother of {s}?",
    "employer": "Which company does {s} work for?",
    "founder": "Who founded {s}?",
    "headquarters": "Where is {s} headquartered?",
    "country": "Which country is {s} located in?",
    "capital": "What is the capital of {s}?",
    "released": "In which year was {s} released?",
    "published": "In which year was {s} published?",
    "profession": "What is the profession of {s}?",
    "population": "What is the population of {s}?",
    "industry": "What does {s} make?",
}


def _chunk_sentences(chunk: Chunk) -> Sequence[str]:
    return chunk.sentences or split_sentences(chunk.text)


class WorldQAGenerator:
    """Exact pairs for a PDF of embedded-world sentences: each sentence that is a fact of the
    world gives one question about its subject, answered by its object."""

    def __init__(self, world):
        missing = sorted({f.relation for f in world.facts} - set(WORLD_QUESTIONS))
        if missing:
            raise ConfigError(f"no question template for world relation(s) {missing}")
        self.world = world

    def generate(self, chunks: Sequence[Chunk]) -> list[QAPair]:
        pairs = []
        for chunk in chunks:
            for sentence in _chunk_sentences(chunk):
                fact = self.world.fact_by_sentence(sentence)
                if fact is not None:
                    pairs.append(QAPair(WORLD_QUESTIONS[fact.relation].format(s=fact.subject), fact.object,
                                        chunk.cid, content_words(fact.object) or (fact.object,)))
        return pairs


QA_SYSTEM_PROMPT = ("You write reading-comprehension questions about a passage. Every answer is a short "
                    "phrase copied exactly from the passage (a name, a place, a date or a number).")
# "Question:"/"Answer:" at a line start, also as "Q:"/"A:", numbered ("1. Question:") or in bold.
_LABEL = re.compile(r"^\W*(?:\d+\s*[.)]\s*)?\W*(question|answer|q|a)\s*\d*\s*\**\s*:\**\s*(.*)$", re.IGNORECASE)
_INLINE_ANSWER = re.compile(r"\s\W*(?:answer|a)\s*\**\s*:\**\s*", re.IGNORECASE)


def qa_messages(chunk: Chunk, n: int) -> list[dict]:
    user = (f"Passage:\n{chunk.text}\n\nWrite {n} question{'s' if n > 1 else ''} that the passage answers. "
            "Use exactly this format for each, with nothing else:\nQuestion: <question>\nAnswer: <answer>")
    return [{"role": "system", "content": QA_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_qa_reply(reply: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a free-form reply: labelled lines in any common style, an
    answer on the question's own line, markdown and numbering stripped. A question without an
    answer is dropped."""
    pairs, question = [], None
    for raw in reply.splitlines():
        m = _LABEL.match(raw.strip())
        if not m:
            continue
        label, rest = m.group(1).lower(), m.group(2).strip()
        if label in ("question", "q"):
            parts = _INLINE_ANSWER.split(rest, maxsplit=1)
            question = parts[0].strip(" *")
            if len(parts) == 2:
                pairs.append((question, parts[1]))
                question = None
        elif question:
            pairs.append((question, rest))
            question = None
    return [(q, _clean_answer(a)) for q, a in pairs if q]


def _clean_answer(answer: str) -> str:
    answer = answer.strip().strip("*_`\"'\u201c\u201d").strip()
    # A closing period is the sentence's, unless it ends an initial ("Washington D.C.").
    return answer[:-1].rstrip() if answer.endswith(".") and not re.search(r"\b\w\.$", answer) else answer


def _found_in(answer: str, text: str) -> bool:
    return bool(answer) and " ".join(answer.split()).lower() in " ".join(text.split()).lower()


class TeacherQAGenerator:
    """Pairs written by a chat teacher (`steper.teachers`: HFTeacher or OpenAITeacher), up to
    `n_per_chunk` per chunk. Pairs whose answer is empty or not in the chunk are dropped: a
    teacher that paraphrases or invents answers would score the model on its own mistakes."""

    def __init__(self, teacher, n_per_chunk: int = 2):
        if not callable(getattr(teacher, "chat", None)):
            raise ConfigError(f"teacher {type(teacher).__name__} cannot chat (it has no chat() method)")
        if isinstance(n_per_chunk, bool) or not isinstance(n_per_chunk, int) or n_per_chunk < 1:
            raise ConfigError(f"n_per_chunk must be an integer >= 1, got {n_per_chunk!r}")
        self.teacher, self.n_per_chunk = teacher, n_per_chunk

    def generate(self, chunks: Sequence[Chunk]) -> list[QAPair]:
        replies = self.teacher.chat([qa_messages(c, self.n_per_chunk) for c in chunks])
        if len(replies) != len(chunks):
            raise WMTPError(f"teacher returned {len(replies)} replies for {len(chunks)} chunks")
        pairs = []
        for chunk, reply in zip(chunks, replies):
            kept: dict[str, QAPair] = {}
            for question, answer in parse_qa_reply(reply):
                if _found_in(answer, chunk.text) and question not in kept:
                    kept[question] = QAPair(question, answer, chunk.cid, content_words(answer) or (answer,))
            pairs += list(kept.values())[: self.n_per_chunk]
        return pairs


def generate_qa(chunks: Sequence[Chunk], generator: QAGenerator) -> list[QAPair]:
    """The generator's pairs, each (question, answer) once (overlapping chunks repeat sentences;
    the first chunk keeps it). No pair at all is an error: there would be nothing to evaluate."""
    if not chunks:
        raise WMTPError("no chunks to generate QA pairs from")
    known = {c.cid for c in chunks}
    seen: dict[tuple[str, str], QAPair] = {}
    for pair in generator.generate(chunks):
        if pair.chunk_id not in known:
            raise WMTPError(f"{type(generator).__name__} returned a pair for unknown chunk {pair.chunk_id!r}")
        seen.setdefault((pair.question, pair.answer), pair)
    if not seen:
        raise WMTPError(f"{type(generator).__name__} found no question in {len(chunks)} chunks "
                        "(write the pairs yourself as QA JSONL, or use a teacher)")
    return list(seen.values())
