"""Teacher data generation: run the interleaved loop over a split's questions, keep the
trajectories whose final answer matches the gold answer, and write the step-wise datasets.

Resumable: trajectories are appended to `trajectories.jsonl` one chunk of questions at a time
(flushed and fsynced), and a restarted run skips every question already there. A line cut off
by a crash is dropped, never parsed as a trajectory, so after any interruption each question
is written exactly once. Teacher calls dominate the cost (an HTTP endpoint or a local LM), so
re-running questions that already finished is what resuming saves."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from weighted_mtp.errors import DataError
from weighted_mtp.rag.qa_metrics import exact_match
from weighted_mtp.steper.step_data import StepDataStats, write_step_datasets
from weighted_mtp.steper.trajectory import Reasoner, Trajectory, run_interleaved

TRAJECTORIES_FILE = "trajectories.jsonl"


def read_trajectories(path: Path) -> list[Trajectory]:
    """Every complete line; an unterminated last line (a crash mid-write) is cut off the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    out = []
    for line_no, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Trajectory.from_json_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError.at(path, line_no, f"not a trajectory ({exc}); delete the file to regenerate") from None
    return out


def is_kept(trajectory: Trajectory) -> bool:
    """The teacher filter: the final answer must match a gold answer (SQuAD-normalised EM).
    Intermediate sentences are not checked, as in the paper."""
    return trajectory.finished and exact_match(trajectory.prediction, trajectory.answers) == 1.0


def generate_trajectories(questions: Sequence[Any], retriever, teacher: Reasoner, path: Path, *, k: int = 4,
                          max_steps: int = 5, chunk_size: int = 64, show_progress: bool = True) -> list[Trajectory]:
    """Trajectories for `questions` (in their order), generating only the missing ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {t.qid: t for t in read_trajectories(path)}
    todo = [q for q in questions if q.qid not in done]
    with open(path, "a", encoding="utf-8") as f, tqdm(total=len(questions), initial=len(questions) - len(todo),
                                                     disable=not show_progress, desc="teacher") as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            for trajectory in run_interleaved(chunk, retriever, teacher, k=k, max_steps=max_steps):
                f.write(trajectory.to_json() + "\n")
                done[trajectory.qid] = trajectory
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(chunk))
    return [done[q.qid] for q in questions]


def generate_split(questions: Sequence[Any], retriever, teacher: Reasoner, out_dir: Path, *, k: int = 4,
                   max_steps: int = 5, chunk_size: int = 64, show_progress: bool = True) -> StepDataStats:
    """Trajectories, the teacher filter, the step datasets and a `stats.json` for one split."""
    trajectories = generate_trajectories(questions, retriever, teacher, out_dir / TRAJECTORIES_FILE, k=k,
                                         max_steps=max_steps, chunk_size=chunk_size, show_progress=show_progress)
    keep = [is_kept(t) for t in trajectories]
    stats = write_step_datasets(trajectories, keep, retriever.passage, out_dir)
    summary = {"questions": len(trajectories), "kept": stats.kept, "dropped": len(trajectories) - stats.kept,
               "unfinished": sum(not t.finished for t in trajectories), "rows": stats.rows,
               "mean_steps_kept": (sum(len(t.steps) for t, ok in zip(trajectories, keep) if ok) / max(1, stats.kept))}
    (out_dir / "stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    return stats
