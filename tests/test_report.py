"""`wmtp report` over two real (tiny) runs: a baseline and a Rho-1 arm, one of them with a faked
evaluation. The numbers in the report must be the ones in the runs' files, the HTML must stand
alone, and the report must land in the run's own MLflow run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import REPO, tiny_training_overrides
from weighted_mtp.cli import main
from weighted_mtp.config import load_config
from weighted_mtp.errors import WMTPError
from weighted_mtp.report import collect_run, example_token_weights, write_report
from weighted_mtp.report.collect import unique_names
from weighted_mtp.report.plots import layout_tokens
from weighted_mtp.report.render import fmt_metric, fmt_rate
from weighted_mtp.report.stats import mean_ci_over_seeds
from weighted_mtp.report.token_weights import WeightedExample
from weighted_mtp.training.loop import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory, micro_model_dir):
    """Two 2-step arms; only the Rho-1 arm tracks in MLflow (the baseline has no store)."""
    root = tmp_path_factory.mktemp("arms")
    base = {"training.max_steps": 2, "dataset.max_length": 160}
    cfg = load_config(REPO / "configs" / "baseline" / "baseline.yaml", tiny_training_overrides(**base))
    train(cfg, root / "baseline", show_progress=False)
    cfg = load_config(REPO / "configs" / "rho1" / "rho1.yaml", tiny_training_overrides(
        **base, **{"models.reference.path": micro_model_dir, "mlflow.enabled": True}))
    train(cfg, root / "rho1", show_progress=False)
    return root


def _fake_eval(run_dir, per_task_pass1: np.ndarray, subset: bool) -> list[float]:
    """An eval summary + per-task files shaped like `wmtp eval` writes them; per-seed pass@1."""
    bench = run_dir / "eval" / "embedded"
    n_seeds, n_tasks = per_task_pass1.shape
    per_seed = [float(v) for v in per_task_pass1.mean(axis=1)]
    for s in range(n_seeds):
        (bench / f"seed{s}").mkdir(parents=True)
        rows = [{"task_id": f"task{t}", "n": 10, "c": int(per_task_pass1[s, t] * 10), "pass@1": per_task_pass1[s, t],
                 "pass@5": 1.0, "pass@10": 1.0} for t in range(n_tasks)]
        (bench / f"seed{s}" / "per_task.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"benchmark": "embedded", "split": "test", "subset": subset, "n_tasks": n_tasks, "n_tasks_total": 200,
               "n": 10, "ks": [1, 5, 10], "temperature": 0.8, "top_p": 0.95, "seeds": list(range(n_seeds)),
               "prompt_format": "alpaca", "checkpoint": str(run_dir / "final"),
               "temperature_selected_on": "embedded/valid",
               "pass_at_k": {"1": per_seed, "5": [1.0] * n_seeds, "10": [1.0] * n_seeds}}
    (bench / "summary.json").write_text(json.dumps(summary))
    return per_seed


def _last_val(run_dir, key):
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e[key] for e in events if key in e][-1]


def test_report_compares_arms(runs, tmp_path):
    per_task = np.random.default_rng(0).integers(0, 11, size=(3, 12)) / 10
    per_seed = _fake_eval(runs / "rho1", per_task, subset=True)
    md_path, html_path = write_report([runs / "baseline", runs / "rho1"], tmp_path / "out", n_examples=2)
    md = md_path.read_text()

    assert "| baseline | baseline | uniform | 2 |" in md and "| rho1 | rho1 | rho1 | 2 |" in md
    for arm in ("baseline", "rho1"):
        row = next(line for line in md.splitlines()
                   if line.startswith(f"| {arm} | {fmt_metric(_last_val(runs / arm, 'val/loss'))} |"))
        assert fmt_metric(_last_val(runs / arm, "val/ce_head4")) in row
    assert "selection_ratio" in md  # Rho-1's weight statistics; the baseline has none
    assert "subset (12 of 200 tasks)" in md
    mean, lo, hi = mean_ci_over_seeds(per_seed)
    pass1 = next(line for line in md.splitlines() if "| pass@1 |" in line)
    assert pass1.startswith(f"| rho1 | pass@1 | {fmt_rate(mean)} | [{lo:.3f}, {hi:.3f}] | [")
    assert "Not evaluated on embedded yet: baseline." in md

    html = html_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)
    assert html.count('src="data:image/png;base64,') == md.count("](") >= 4
    assert (md_path.parent / "heatmap_rho1_1.png").is_file() and (md_path.parent / "heatmap_rho1_2.png").is_file()
    assert not list(md_path.parent.glob("heatmap_baseline*")) and not list(md_path.parent.glob("weights_baseline*"))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'rho1' / 'mlflow.db'}")
    run_id = (runs / "rho1" / "mlflow_run_id").read_text().strip()
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/heatmap_rho1_1.png"} <= logged
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1  # no new run
    assert not (runs / "baseline" / "mlflow.db").exists()  # skipped, nothing created


def test_token_weights_of_a_weighted_arm_only(runs):
    assert example_token_weights(runs / "baseline") is None
    sample = example_token_weights(runs / "rho1", n_examples=2)
    assert len(sample.examples) == 2
    ex = sample.examples[0]
    assert len(ex.tokens) == len(ex.weights) == len(ex.is_target)
    assert not ex.is_target[0] and ex.is_target[-1]  # prompt first, the response ends with EOS
    assert set(np.unique(sample.target_weights)) <= {0.0, 1.0}  # top-k selection
    assert sample.target_weights.mean() == pytest.approx(0.7, abs=0.05)
    assert "".join(ex.tokens).count("### Response:") == 1  # readable text, not byte-level symbols


def test_cli_default_output_and_no_evaluation(runs, capsys):
    assert main(["report", str(runs / "baseline"), "--no-weights"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(runs / "report" / "report.md"), str(runs / "report" / "report.html")]
    md = (runs / "report" / "report.md").read_text()
    assert "No evaluation exists yet" in md and "--no-weights" in md


def test_not_a_run_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WMTPError, match=re.escape(str(tmp_path / "empty"))):
        write_report([tmp_path / "empty"], tmp_path / "out")
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert str(tmp_path / "empty") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _fake_run(path, name, lines):
    path.mkdir()
    (path / "config.yaml").write_text(f"experiment:\n  name: {name}\n  stage: baseline\n")
    (path / "metrics.jsonl").write_text(lines)
    return path


def test_collect_last_values_and_cut_lines(tmp_path):
    run = _fake_run(tmp_path / "a", "arm", '{"step": 1, "train/loss": 3.0}\n{"step": 2, "train/loss": 2.0}\n'
                                           '{"step": 2, "val/loss": 2.5}\n{"step": 3, "train/lo')
    summary = collect_run(run)
    assert summary.steps == 2 and summary.final_train == {"train/loss": 2.0} and summary.final_val == {"val/loss": 2.5}
    assert summary.history["train/loss"] == [(1, 3.0), (2, 2.0)] and summary.evals == {}
    bad = _fake_run(tmp_path / "b", "arm", '{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(WMTPError, match=re.escape(f"{bad / 'metrics.jsonl'}:2")):
        collect_run(bad)
    assert unique_names([summary, collect_run(_fake_run(tmp_path / "c", "arm", ""))]) == ["arm (a)", "arm (c)"]


def test_heatmap_layout_wraps_and_breaks_lines():
    ex = WeightedExample(tokens=["P1", "P2", "def", " f", "():\n    ", "return", "</s>"], weights=[0, 0, 1, 1, 1, 1, 1],
                         is_target=[False, False, True, True, True, True, True])
    cells = layout_tokens(ex, width=8, prompt_tail=1)
    assert cells[0] == (0, 0, "…", -1)  # P1 elided, P2 kept as the prompt's tail
    assert [c[2] for c in cells[1:]] == ["P2", "def", " f", "():↵", "    ", "return", "</s>"]
    assert [(c[0], c[1]) for c in cells[1:]] == [(0, 2), (0, 4), (1, 0), (1, 2), (2, 0), (3, 0), (4, 0)]
