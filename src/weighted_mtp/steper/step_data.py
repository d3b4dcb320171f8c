"""Teacher trajectories -> StepER's three step-wise datasets (rows in the processed Record
schema, so the one training loop reads them like any SFT data).

For a kept trajectory with sentences r_1..r_S (r_S = "So the answer is: a."):
  first step (init):  prompt (q, P_1)     -> response r_1
  mid step s (exp):   prompt (q, P_<=s)   -> response R_<=s     for 1 < s < S
  final step (agg):   prompt (q, P_<=S)   -> response R_<=S     (the Vanilla-KD datum)
The response is the reasoning so far (the paper's l(M(q, P_<=s), R_<=s)); at test time the
student's earlier sentences are the forced start of its response and it writes the next one,
so each row is exactly one step of the inference loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from weighted_mtp.data.records import Record
from weighted_mtp.jsonl import write_jsonl
from weighted_mtp.rag.passages import Passage
from weighted_mtp.steper.trajectory import Trajectory
from weighted_mtp.world.prompts import context, instruction, join_reasoning

STEP_FILES = {"init": "first_step.jsonl", "exp": "mid_step.jsonl", "agg": "final_step.jsonl"}
ALL_STEPS_FILE = "steper.jsonl"


def step_records(trajectory: Trajectory, passage: Callable[[str], Passage], difficulty: int = 0) -> list[Record]:
    """The rows one (kept) trajectory contributes, in step order."""
    S = len(trajectory.steps)
    rows = []
    for s in range(1, S + 1):
        task = "agg" if s == S else ("init" if s == 1 else "exp")
        rows.append(Record(
            instruction=instruction(trajectory.question),
            input=context([passage(pid) for pid in trajectory.pids_upto(s)]),
            output=join_reasoning(trajectory.sentences_upto(s)),
            task_id=f"{trajectory.qid}:{task}:{s}",
            is_correct=True,
            problem_id=trajectory.qid,
            difficulty=difficulty or S,
            step_task=task,
        ))
    return rows


@dataclass
class StepDataStats:
    trajectories: int
    kept: int
    rows: dict[str, int]


def write_step_datasets(trajectories: Sequence[Trajectory], keep: Sequence[bool], passage: Callable[[str], Passage],
                        out_dir: Path) -> StepDataStats:
    """first_step / mid_step / final_step JSONL plus all three in one file (`steper.jsonl`,
    trajectory order), each written to a temporary name and renamed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[Record]] = {task: [] for task in STEP_FILES}
    everything: list[Record] = []
    for trajectory, ok in zip(trajectories, keep):
        if not ok:
            continue
        rows = step_records(trajectory, passage)
        everything.extend(rows)
        for row in rows:
            by_task[row.step_task].append(row)
    for name, rows in [*((STEP_FILES[t], r) for t, r in by_task.items()), (ALL_STEPS_FILE, everything)]:
        _write_records(out_dir / name, rows)
    return StepDataStats(trajectories=len(trajectories), kept=sum(keep), rows={t: len(r) for t, r in by_task.items()})


def _write_records(path: Path, rows: Sequence[Record]) -> None:
    write_jsonl(path, (row.to_json_dict() for row in rows))
