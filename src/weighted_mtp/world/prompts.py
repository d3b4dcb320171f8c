"""The text format shared by the teacher, the step datasets and the student: one reasoning
sentence per step, the last one "So the answer is: <answer>." (IRCoT). Everything that cuts,
stops or reads an answer goes through here, so teacher and student follow the same rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from weighted_mtp.rag.passages import Passage, format_passages

ANSWER_MARKER = "So the answer is:"
INSTRUCTION = ("Answer the question by reasoning over the passages, one sentence at a time. "
               f"End with \"{ANSWER_MARKER} <answer>.\"\nQuestion: {{question}}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


@dataclass(frozen=True)
class StepQuery:
    """What the reasoner sees at one step: the question, the passages retrieved so far (P_<=s,
    in retrieval order) and its own earlier sentences (R_<s)."""

    qid: str
    question: str
    passages: tuple[Passage, ...]
    reasoning: tuple[str, ...]


def instruction(question: str) -> str:
    return INSTRUCTION.format(question=question)


def context(passages: Sequence[Passage]) -> str:
    return format_passages(passages)


def join_reasoning(sentences: Sequence[str]) -> str:
    """R_<=s as one response string; the student continues it after a space."""
    return " ".join(s.strip() for s in sentences)


def first_sentence(text: str) -> str:
    """The one sentence a reasoning step keeps of a generation: the first line, cut after its
    first sentence end (. ! ? followed by a space). A sentence that starts with the answer
    marker keeps its whole line, because answers may contain periods ("St. Louis", "3.5")."""
    line = text.strip().split("\n", 1)[0].strip()
    if line.startswith(ANSWER_MARKER):
        return line
    match = _SENTENCE_END.search(line)
    return line[: match.start()].strip() if match else line


def is_final(sentence: str) -> bool:
    """The stop rule: a step whose sentence contains the answer marker ends the trajectory."""
    return ANSWER_MARKER in sentence


def extract_answer(sentence: str) -> str:
    """The text after the answer marker, without one trailing period; "" if there is none."""
    if ANSWER_MARKER not in sentence:
        return ""
    answer = sentence.split(ANSWER_MARKER, 1)[1].strip()
    return answer[:-1].strip() if answer.endswith(".") else answer
