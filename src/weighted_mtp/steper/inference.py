"""The student at test time: the same interleaved loop the teacher ran, with the student
writing each sentence, scored with EM / F1 / Acc (SQuAD normalisation) and the recall of the
gold supporting passages after each step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from weighted_mtp.data.collate import format_prompt
from weighted_mtp.data.records import Record
from weighted_mtp.eval.generate import GenerationConfig, generate
from weighted_mtp.rag.qa_metrics import accuracy, exact_match, f1_score
from weighted_mtp.steper.trajectory import Trajectory, run_interleaved
from weighted_mtp.world.prompts import StepQuery, context, instruction, join_reasoning


def student_prompt(query: StepQuery) -> str:
    """The training prompt of this step followed by the student's earlier sentences (R_<s), so
    the next tokens it writes are r_s. No trailing space: in training, a sentence's first
    token carries its leading space, and the prompt must end where a sentence ends."""
    record = Record(instruction=instruction(query.question), input=context(query.passages), output="",
                    task_id=query.qid, is_correct=True, problem_id=query.qid, difficulty=0)
    return format_prompt(record) + join_reasoning(query.reasoning)


class StudentReasoner:
    """Greedy decoding of one sentence per query; prompts are sorted by length inside a call so
    batches carry little padding, and answers come back in query order."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 32, batch_size: int = 32):
        self.model, self.tokenizer = model, tokenizer
        self.cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop=("\n",),
                                    batch_size=batch_size)

    def step(self, queries: Sequence[StepQuery]) -> list[str]:
        prompts = [student_prompt(q) for q in queries]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        texts = generate(self.model, self.tokenizer, [prompts[i] for i in order], self.cfg)
        out = [""] * len(prompts)
        for i, text in zip(order, texts):
            out[i] = text
        return out


def score_trajectory(trajectory: Trajectory, supporting: Sequence[str], max_steps: int) -> dict[str, Any]:
    """One row of the evaluation: answer metrics and recall of the gold supporting passages in
    P_<=s for s = 1..max_steps (after the loop stops, the set no longer grows)."""
    pred, golds = trajectory.prediction, trajectory.answers
    row: dict[str, Any] = {"qid": trajectory.qid, "prediction": pred, "answers": list(golds),
                           "em": exact_match(pred, golds), "f1": f1_score(pred, golds), "acc": accuracy(pred, golds),
                           "steps": len(trajectory.steps), "finished": trajectory.finished}
    gold = set(supporting)
    for s in range(1, max_steps + 1):
        found = gold.intersection(trajectory.pids_upto(s))
        row[f"recall_step{s}"] = len(found) / len(gold) if gold else float("nan")
    return row


def summarize(rows: Sequence[dict[str, Any]], max_steps: int) -> dict[str, float]:
    keys = ["em", "f1", "acc", "steps", "finished"] + [f"recall_step{s}" for s in range(1, max_steps + 1)]
    return {key: float(np.nanmean([float(r[key]) for r in rows])) if rows else float("nan") for key in keys} | {
        "n_questions": float(len(rows))}


def evaluate_student(model, tokenizer, questions: Sequence[Any], retriever, *, k: int = 4, max_steps: int = 5,
                     batch_size: int = 32, max_new_tokens: int = 32,
                     out_path: Path | None = None) -> tuple[dict[str, float], list[Trajectory]]:
    reasoner = StudentReasoner(model, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size)
    trajectories = run_interleaved(questions, retriever, reasoner, k=k, max_steps=max_steps)
    rows = [score_trajectory(t, getattr(q, "supporting_pids", ()), max_steps) for t, q in zip(trajectories, questions)]
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "w", encoding="utf-8") as f:
            for t, row in zip(trajectories, rows):
                f.write(json.dumps(row | {"trajectory": t.to_json_dict()["steps"]}, ensure_ascii=False) + "\n")
    return summarize(rows, max_steps), trajectories
