"""The JSONL formats of Apple's ml-clara, one per stage, read strictly and written so that the
upstream loader (`openrlhf/datasets/sft_dataset.py::preprocess_data`) reads them too. Files made
for one stage are easy to hand to another by mistake and the upstream loader then fails deep in a
collate function, so every check here names the file and line, and says which stage a record
looks like when it is the wrong one.

Stage 1 (compressor pretraining), one document per record:
  {"data_type": "qa", "question": [q1..qn], "answers": [a1..an], "docs": [doc]}
  {"data_type": "paraphrase", "question": "", "answers": [paraphrase], "docs": [doc]}
Stage 2 (instruction tuning): {"question": str, "docs": [str, ...], "answer": str}; as upstream,
  the answer may instead be the first of `answers` or of `golden_answers` (lists).
Stage 3 (end to end): stage 2 plus "pos_index": [indices of the gold documents in docs]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.jsonl import iter_jsonl, write_jsonl

DATA_TYPES = ("qa", "paraphrase")


@dataclass(frozen=True)
class Stage1Example:
    data_type: str  # "qa" or "paraphrase"
    questions: tuple[str, ...]  # () for a paraphrase
    answers: tuple[str, ...]  # one per question; the paraphrase alone for a paraphrase
    doc: str

    def target(self) -> str:
        """What the generator must produce from the document's memory alone: for "qa", every
        question AND its answer (it is not given the questions), as upstream concatenates them."""
        if self.data_type == "paraphrase":
            return self.answers[0]
        return "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in zip(self.questions, self.answers))

    def to_json(self) -> dict:
        question: Union[str, list[str]] = "" if self.data_type == "paraphrase" else list(self.questions)
        return {"data_type": self.data_type, "question": question, "answers": list(self.answers), "docs": [self.doc]}


@dataclass(frozen=True)
class Stage2Example:
    question: str
    docs: tuple[str, ...]
    answer: str  # the training target
    gold_answers: tuple[str, ...]  # for EM/F1 (upstream's target may be a teacher's answer)

    def to_json(self) -> dict:
        return {"question": self.question, "docs": list(self.docs), "answer": self.answer,
                "golden_answers": list(self.gold_answers)}


@dataclass(frozen=True)
class Stage3Example:
    question: str
    docs: tuple[str, ...]  # the candidate pool
    answer: str
    gold_answers: tuple[str, ...]
    pos_index: tuple[int, ...]  # gold documents in docs: for Recall@k only, never the loss

    def to_json(self) -> dict:
        return {"question": self.question, "docs": list(self.docs), "answer": self.answer,
                "golden_answers": list(self.gold_answers), "pos_index": list(self.pos_index)}


Example = Union[Stage1Example, Stage2Example, Stage3Example]
_STAGE_OF = {Stage1Example: 1, Stage2Example: 2, Stage3Example: 3}


# ------------------------------------------------------------------------------------- parsing

class _Bad(Exception):
    """A record's problem, before the file and line are known."""


def _strings(obj: dict, name: str, *, allow_empty_items: bool = False) -> tuple[str, ...]:
    value = obj[name]
    if not isinstance(value, list):
        raise _Bad(f"'{name}' must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Bad(f"'{name}'[{i}] must be a string, got {type(item).__name__}")
        if not allow_empty_items and not item.strip():
            raise _Bad(f"'{name}'[{i}] is empty")
    return tuple(value)


def _require(obj: dict, *names: str) -> None:
    for name in names:
        if name not in obj:
            raise _Bad(f"missing field '{name}'")


def _docs(obj: dict, exactly: int | None = None) -> tuple[str, ...]:
    """`docs`, or as upstream falls back, `context` or `content`."""
    name = next((n for n in ("docs", "context", "content") if n in obj), None)
    if name is None:
        raise _Bad("missing field 'docs'")
    docs = _strings(obj, name)
    if not docs:
        raise _Bad(f"'{name}' is empty")
    if exactly is not None and len(docs) != exactly:
        raise _Bad(f"'{name}' must hold exactly {exactly} document (upstream asserts generation_top_k = 1 "
                   f"in stage 1), got {len(docs)}")
    return docs


def _parse_stage1(obj: dict) -> Stage1Example:
    data_type = obj.get("data_type", "qa")  # upstream's default
    if data_type not in DATA_TYPES:
        raise _Bad(f"'data_type' must be one of {list(DATA_TYPES)}, got {data_type!r}")
    if data_type == "qa" and isinstance(obj.get("question"), str):
        raise _Bad("'question' is a string, but a stage-1 qa record has a list of questions; "
                   "this looks like a stage-2/3 record (use --stage 2 or 3)")
    _require(obj, "question", "answers")
    doc = _docs(obj, exactly=1)[0]
    if data_type == "paraphrase":
        if obj["question"] != "":
            raise _Bad(f"a paraphrase record has \"question\": \"\" (upstream ignores it), got {obj['question']!r}")
        answers = _strings(obj, "answers")
        if len(answers) != 1:
            raise _Bad(f"a paraphrase record has exactly one paraphrase in 'answers', got {len(answers)}")
        return Stage1Example("paraphrase", (), answers, doc)
    questions, answers = _strings(obj, "question"), _strings(obj, "answers")
    if not questions:
        raise _Bad("'question' is empty: a qa record needs at least one question/answer pair")
    if len(questions) != len(answers):
        raise _Bad(f"'question' has {len(questions)} items but 'answers' has {len(answers)}; they pair up one to one")
    return Stage1Example("qa", questions, answers, doc)


def _answers(obj: dict) -> tuple[str, tuple[str, ...]]:
    """(target, gold answers), in upstream's order: `answer`, else `answers`[0], else `golden_answers`[0]."""
    lists = {}
    for name in ("answers", "golden_answers"):
        if name in obj:
            lists[name] = _strings(obj, name)
            if not lists[name]:
                raise _Bad(f"'{name}' is empty")
    if "answer" in obj:
        if not isinstance(obj["answer"], str):
            raise _Bad(f"'answer' must be a string, got {type(obj['answer']).__name__}")
        if not obj["answer"].strip():
            raise _Bad("'answer' is empty")
        answer = obj["answer"]
    elif lists:
        answer = next(iter(lists.values()))[0]
    elif "gold_answer" in obj:
        raise _Bad("has 'gold_answer' but no 'answer': upstream's loader rejects such records too "
                   "(ValueError in preprocess_data); add \"answer\": <the target> (or an 'answers' list)")
    else:
        raise _Bad("missing field 'answer' (or an 'answers' / 'golden_answers' list)")
    if "golden_answers" in lists:
        gold = lists["golden_answers"]
    elif "answers" in lists:
        gold = lists["answers"]
    elif isinstance(obj.get("gold_answer"), str) and obj["gold_answer"].strip():
        gold = (obj["gold_answer"],)
    else:
        gold = (answer,)
    return answer, gold


def _parse_stage2(obj: dict) -> Stage2Example:
    if "data_type" in obj or isinstance(obj.get("question"), list):
        raise _Bad("looks like a stage-1 record (has data_type or a list of questions); use --stage 1")
    _require(obj, "question")
    if not isinstance(obj["question"], str):
        raise _Bad(f"'question' must be a string, got {type(obj['question']).__name__}")
    if not obj["question"].strip():
        raise _Bad("'question' is empty")
    docs = _docs(obj)
    answer, gold = _answers(obj)
    return Stage2Example(obj["question"], docs, answer, gold)


def _parse_stage3(obj: dict, allow_empty_pos: bool) -> Stage3Example:
    base = _parse_stage2(obj)
    pos = obj.get("pos_index", [])  # upstream's default
    if not isinstance(pos, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in pos):
        raise _Bad(f"'pos_index' must be a list of integers, got {pos!r}")
    for i in pos:
        if not 0 <= i < len(base.docs):
            raise _Bad(f"pos_index {i} is out of range for {len(base.docs)} docs (0..{len(base.docs) - 1})")
    if len(set(pos)) != len(pos):
        raise _Bad(f"'pos_index' repeats an index: {pos}")
    if not pos and not allow_empty_pos:
        raise _Bad(f"{'empty' if 'pos_index' in obj else 'missing'} 'pos_index': stage 3 logs Recall@k from it; "
                   "for candidate pools without known positives (upstream's no_pos files) allow empty pos_index")
    return Stage3Example(base.question, base.docs, base.answer, base.gold_answers, tuple(pos))


def parse_record(obj: object, stage: int, *, allow_empty_pos: bool = False) -> Example:
    """One decoded JSON line as the example of `stage`; raises DataError without a location
    (read_stage adds file:line)."""
    _check_stage(stage)
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    try:
        if stage == 1:
            return _parse_stage1(obj)
        return _parse_stage2(obj) if stage == 2 else _parse_stage3(obj, allow_empty_pos)
    except _Bad as exc:
        raise DataError(str(exc)) from None


def _check_stage(stage: object) -> None:
    if isinstance(stage, bool) or not isinstance(stage, int) or stage not in (1, 2, 3):
        raise ConfigError(f"stage must be 1, 2 or 3, got {stage!r}")


# ------------------------------------------------------------------------------------- files

def read_stage(path: str | Path, stage: int, *, allow_empty_pos: bool = False) -> list[Example]:
    """Every example of a stage's JSONL file (blank lines skipped); the first bad line raises
    DataError "path:line: ..."."""
    _check_stage(stage)
    out: list[Example] = []
    for line_no, obj in iter_jsonl(path, f"stage-{stage} data"):
        try:
            out.append(parse_record(obj, stage, allow_empty_pos=allow_empty_pos))
        except DataError as exc:
            raise DataError.at(path, line_no, str(exc)) from None
    if not out:
        raise DataError(f"{path}: no stage-{stage} examples (the file is empty)")
    return out


def write_stage(path: str | Path, examples: Iterable[Example]) -> Path:
    """Write examples of one stage as upstream JSONL (atomically). Each record is checked as
    read_stage would check it, so a file written here always reads back."""
    path = Path(path)
    examples = list(examples)
    if not examples:
        raise DataError(f"{path}: no examples to write")
    kinds = {type(e) for e in examples}
    if len(kinds) != 1 or not kinds <= set(_STAGE_OF):
        raise DataError(f"{path}: examples must all be of one stage class, got {sorted(k.__name__ for k in kinds)}")
    stage = _STAGE_OF[kinds.pop()]
    records = [ex.to_json() for ex in examples]
    for n, record in enumerate(records, start=1):
        try:
            parse_record(record, stage, allow_empty_pos=True)
        except DataError as exc:
            raise DataError.at(path, n, f"refusing to write an invalid stage-{stage} example: {exc}") from None
    return write_jsonl(path, records)


def validate_file(path: str | Path, stage: int, *, allow_empty_pos: bool = False) -> str:
    """A one-line summary of a valid file ("ok: 120 stage-2 examples, 3 docs each"), or DataError
    naming the first bad line."""
    examples = read_stage(path, stage, allow_empty_pos=allow_empty_pos)
    n = len(examples)
    if stage == 1:
        qa = [e for e in examples if e.data_type == "qa"]
        pairs = sum(len(e.questions) for e in qa)
        return (f"ok: {n} stage-1 examples ({len(qa)} qa with {pairs} question/answer pairs, "
                f"{n - len(qa)} paraphrase)")
    sizes = sorted({len(e.docs) for e in examples})
    docs = f"{sizes[0]} docs each" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]} docs each"
    summary = f"ok: {n} stage-{stage} examples, {docs}"
    if stage == 3:
        without = sum(not e.pos_index for e in examples)
        summary += f", {sum(len(e.pos_index) for e in examples)} positives"
        summary += f" ({without} without)" if without else ""
    return summary
