"""The README's main job, shortened: it trains, prints the summary, and MLflow really holds the
metrics that metrics.jsonl holds."""

import json

import pytest

from weighted_mtp.cli import main


def test_quickstart_prints_summary_and_tracks_in_mlflow(tmp_path, capsys, micro_model_dir):
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / "earlier-run").write_text("keep me")
    assert main(["quickstart", "--output-dir", str(tmp_path), "--max-steps", "3", "--eval-limit", "4",
                 "--override", "models.policy.path=embedded:micro-llama"]) == 0
    out = capsys.readouterr().out
    assert "== baseline: 3 steps" in out
    assert "tokens/s" in out and "MLflow store: sqlite:///" in out
    for k in range(1, 5):
        assert f"\n   {k:>6} " in out  # one row per head
    run_dir = tmp_path / "baseline"
    assert (run_dir / "final" / "mtp_heads.safetensors").is_file()
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_train = [e for e in events if "train/loss" in e][-1]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == [e["step"] for e in events if "train/loss" in e]
    assert abs(history[-1].value - last_train["train/loss"]) < 1e-6
    run = client.get_run(run_id)
    assert run.data.params["experiment.stage"] == "baseline" and run.data.tags["stage"] == "baseline"
    assert client.get_metric_history(run_id, "val/ce_head4")
    assert not (tmp_path.parent / "mlruns").exists() and not (tmp_path / "mlruns").exists()

    # The pairwise critic trains on the baseline's trunk; verifiable and Rho-1 use it / the baseline.
    row = next(line for line in out.splitlines() if "val pairwise accuracy" in line)
    assert 0.0 <= float(row.split()[-1]) <= 1.0
    assert str(run_dir / "final") in (tmp_path / "critic_pairwise" / "config.yaml").read_text()
    assert str(tmp_path / "critic_pairwise" / "final") in (tmp_path / "verifiable_pairwise" / "config.yaml").read_text()
    assert str(run_dir / "final") in (tmp_path / "rho1" / "config.yaml").read_text()
    for control in ("random_matched", "shuffled"):
        assert str(tmp_path / "critic_pairwise" / "final") in (tmp_path / control / "config.yaml").read_text()
    header = next(line for line in out.splitlines() if line.split()[:1] == ["metric"])
    assert header.split()[1:] == ["baseline", "verifiable_pairwise", "random_matched", "shuffled", "rho1"]
    cells = {line[:31].strip(): line[31:].split() for line in out.splitlines() if line.startswith("   ")}
    assert all(float(x) > 0 for x in cells["val CE head 4"])  # every arm validated on head 4
    assert cells["weight mean"][0] == "-" and float(cells["weight mean"][1]) > 0  # baseline has no weights
    assert float(cells["rho-1 selection ratio"][4]) == pytest.approx(0.7, abs=0.02)
    assert 0.0 <= float(cells["critic train pair accuracy"][1]) <= 1.0
    assert len(set(cells["training rows (digest)"])) == 1  # the arms differ only in their weights
    assert cells["loss normalisation"] == ["weight_mean"] * 5
    assert all(-1.0 <= float(x) <= 1.0 for x in cells["corr(weight, tokens to end)"][1:4])

    # Greedy pass@1 of each arm, sandboxed, then one report over the runs.
    assert out.count("pass@1") >= 5 and "(subset: 4 of 200)" in out
    assert json.loads((run_dir / "eval" / "embedded" / "summary.json").read_text())["subset"] is True
    assert "wmtp study --seeds 0,1,2" in out
    html = tmp_path / "report" / "report.html"
    assert f"report: {html}" in out and html.is_file()
    assert "verifiable_pairwise" in html.read_text() or "verifiable-pairwise" in html.read_text()

    # An earlier quickstart run is moved aside, never overwritten.
    (moved,) = tmp_path.glob("baseline.old-*")
    assert (moved / "earlier-run").read_text() == "keep me"
