"""The interleaved retrieve-and-reason loop (IRCoT), shared by the teacher that writes the
training data and the student at test time, so both follow exactly the same rules:

step 1 retrieves k passages with the question, every later step with the last reasoning
sentence (passages already retrieved are skipped, so each step adds k new ones); the reasoner
then writes one sentence given the question, every passage so far and its earlier sentences.
The loop stops at a sentence containing "So the answer is:", at an empty sentence, or after
`max_steps` steps. All questions advance together, one batched search and one batched
reasoner call per step."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from weighted_mtp.rag.passages import Passage
from weighted_mtp.world.prompts import StepQuery, extract_answer, first_sentence, is_final


class Reasoner(Protocol):
    def step(self, queries: Sequence[StepQuery]) -> list[str]: ...


@dataclass
class TrajectoryStep:
    query: str
    retrieved: tuple[str, ...]  # pids newly retrieved at this step, best first
    sentence: str


@dataclass
class Trajectory:
    qid: str
    question: str
    answers: tuple[str, ...]
    steps: list[TrajectoryStep] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Ended with an answer sentence (not cut by the step limit or an empty sentence)."""
        return bool(self.steps) and is_final(self.steps[-1].sentence)

    @property
    def prediction(self) -> str:
        return extract_answer(self.steps[-1].sentence) if self.finished else ""

    def pids_upto(self, s: int) -> list[str]:
        """P_<=s: every passage retrieved in steps 1..s, in retrieval order."""
        return [pid for step in self.steps[:s] for pid in step.retrieved]

    def sentences_upto(self, s: int) -> list[str]:
        return [step.sentence for step in self.steps[:s]]

    def to_json_dict(self) -> dict[str, Any]:
        return {"qid": self.qid, "question": self.question, "answers": list(self.answers),
                "steps": [{"query": st.query, "retrieved": list(st.retrieved), "sentence": st.sentence}
                          for st in self.steps],
                "prediction": self.prediction}

    @classmethod
    def from_json_dict(cls, obj: dict[str, Any]) -> "Trajectory":
        steps = [TrajectoryStep(st["query"], tuple(st["retrieved"]), st["sentence"]) for st in obj["steps"]]
        return cls(obj["qid"], obj["question"], tuple(obj["answers"]), steps)

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), ensure_ascii=False)


def gold_answers(question: Any) -> tuple[str, ...]:
    """`answers` (public datasets: the answer and its aliases) or a single `answer`."""
    answers = getattr(question, "answers", None)
    if answers is None:
        answers = (question.answer,)
    return tuple(answers)


def run_interleaved(questions: Sequence[Any], retriever, reasoner: Reasoner, *, k: int = 4,
                    max_steps: int = 5) -> list[Trajectory]:
    """One trajectory per question (objects with qid, question and answers/answer)."""
    if k < 1 or max_steps < 1:
        raise ValueError(f"k and max_steps must be >= 1, got k={k}, max_steps={max_steps}")
    trajectories = [Trajectory(q.qid, q.question, gold_answers(q)) for q in questions]
    passages: list[list[Passage]] = [[] for _ in questions]
    seen: list[set[str]] = [set() for _ in questions]
    active = list(range(len(questions)))
    for s in range(1, max_steps + 1):
        if not active:
            break
        search_queries = [trajectories[i].question if s == 1 else trajectories[i].steps[-1].sentence for i in active]
        hits = retriever.search(search_queries, k, exclude=[seen[i] for i in active])
        for i, query, row in zip(active, search_queries, hits):
            new = [hit.pid for hit in row]
            seen[i].update(new)
            passages[i].extend(retriever.passage(pid) for pid in new)
            trajectories[i].steps.append(TrajectoryStep(query=query, retrieved=tuple(new), sentence=""))
        step_queries = [StepQuery(qid=trajectories[i].qid, question=trajectories[i].question,
                                  passages=tuple(passages[i]),
                                  reasoning=tuple(trajectories[i].sentences_upto(s - 1))) for i in active]
        sentences = reasoner.step(step_queries)
        if len(sentences) != len(step_queries):
            raise RuntimeError(f"reasoner returned {len(sentences)} sentences for {len(step_queries)} queries")
        still = []
        for i, text in zip(active, sentences):
            sentence = first_sentence(text)
            trajectories[i].steps[-1].sentence = sentence
            if sentence and not is_final(sentence) and s < max_steps:
                still.append(i)
        active = still
    return trajectories
