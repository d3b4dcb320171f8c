"""A tiny `wmtp study` end to end (2 arms x 2 seeds, 3 steps each, 2 tasks): seeds and links
in the stage configs, the temperature chosen on the validation split, the report's structure,
and resumability: a second call trains and evaluates nothing; an interrupted stage resumes from
its checkpoint and ends bit-identical; a changed config under the same directory is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_training_overrides
from safetensors.torch import load_file

from weighted_mtp.cli import build_parser, main
from weighted_mtp.errors import ConfigError

CONFIGS = REPO / "configs"


def _study_args(out: Path, model: Path) -> list[str]:
    # A 2-block hidden-64 Llama keeps 5 trainings and 16 evaluations cheap.
    # 40 rows at batch 4 are a 10-step epoch: a checkpoint every step (0.1), validation at the end.
    # Policy arms may read the correct side of pairs (data_sampling.policy_data): cap pairs too.
    overrides = tiny_training_overrides(**{"training.max_steps": 3, "checkpoint.save_checkpoint_every": 0.1,
                                           "checkpoint.save_total_limit": 4, "training.eval_every": 0.0,
                                           "dataset.max_length": 128, "data_sampling.val_n_samples": 4,
                                           "data_sampling.pairwise.n_pairs": 40,
                                           "data_sampling.pairwise.val_n_pairs": 4,
                                           "models.policy.path": model})
    return ["study", str(CONFIGS / "rho1" / "rho1.yaml"), "--seeds", "0,1", "--output-dir", str(out),
            *[a for o in overrides for a in ("--override", o)],
            "--limit", "2", "--n", "2", "--k", "1,2", "--temperatures", "0.5,1.0", "--select-limit", "1",
            "--max-new-tokens", "16", "--n-boot", "200"]


def test_tiny_study_end_to_end_and_resumable(tmp_path, capsys, tiny_lm_model_dir):
    out = tmp_path / "study"
    args = _study_args(out, tiny_lm_model_dir)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "trained 4 stage runs" in printed and "rho1 - uniform" in printed

    # Stage configs: the seed everywhere, rho1's reference is the same seed's baseline.
    for seed in (0, 1):
        for arm in ("uniform", "rho1"):
            cfg = yaml.safe_load((out / f"seed{seed}" / arm / "config.yaml").read_text())
            assert cfg["runtime"]["seed"] == seed and cfg["data_sampling"]["seed"] == seed
        rho1 = yaml.safe_load((out / f"seed{seed}" / "rho1" / "config.yaml").read_text())
        assert rho1["models"]["reference"]["path"] == str(out / f"seed{seed}" / "uniform" / "final")

    # Evaluations: greedy and sampled with the study seed; the temperature chosen on valid.
    sampled = json.loads((out / "seed1" / "rho1" / "eval-sampled" / "embedded" / "summary.json").read_text())
    assert sampled["seeds"] == [1] and sampled["n"] == 2 and sampled["subset"] and sampled["n_tasks"] == 2
    assert sampled["temperature_selected_on"] == "embedded/valid"
    choice = json.loads((out / "seed1" / "rho1" / "eval-sampled" / "temperature.json").read_text())
    assert set(choice["candidates"]) == {"0.5", "1"} and choice["temperature"] == sampled["temperature"]
    greedy = json.loads((out / "seed0" / "uniform" / "eval" / "embedded" / "summary.json").read_text())
    assert greedy["temperature"] == 0.0 and greedy["n"] == 1 and greedy["seeds"] == [0]

    # The report: per arm pass@k over seeds, paired comparisons against the baseline.
    report = json.loads((out / "report" / "study.json").read_text())
    assert report["baseline"] == "uniform" and report["study"]["arms"] == ["uniform", "rho1"]
    assert list(report["metrics"]) == ["greedy pass@1", "pass@1", "pass@2"]
    for metric in report["metrics"].values():
        assert set(metric["arms"]) == {"uniform", "rho1"}
        assert set(metric["arms"]["rho1"]["per_seed"]) == {"0", "1"}
        c = metric["vs_baseline"]["rho1"]
        assert c["n_tasks"] == 2 and c["seeds"] == [0, 1] and len(c["seed_diffs"]) == 2
        assert c["ci_lo"] <= c["diff"] <= c["ci_hi"] and 0 < c["p_value"] <= 1 and c["p_holm"] >= c["p_value"]
        if c["p_holm"] >= 0.05:
            assert c["verdict"] == "no significant difference"
    assert "sign-flip permutation" in report["test"]
    costs = report["study"]["cost"]["train"]
    assert set(costs) == {"uniform", "rho1"}
    assert all(c["wall_s"] > 0 and c["cpu_s"] > 0 for by_seed in costs.values() for c in by_seed.values())
    assert report["study"]["cost"]["eval_cpu_s"] > 0
    md = (out / "report" / "study.md").read_text()
    assert "## Answer" in md and "paired bootstrap" in md and "| rho1 |" in md
    if all(m["vs_baseline"]["rho1"]["p_holm"] >= 0.05 for m in report["metrics"].values()):
        assert "no significant difference" in md
    assert (out / "report" / "study.html").read_text().startswith("<!DOCTYPE html>")

    # A second call trains and evaluates nothing.
    final = out / "seed1" / "rho1" / "final" / "model.safetensors"
    before = final.stat().st_mtime_ns
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "trained 0 stage runs, evaluated 0 steps" in printed and "done earlier, skipped" in printed
    assert final.stat().st_mtime_ns == before

    # An interrupted stage (its last checkpoint, final/ and the marker gone) resumes from step 2
    # and ends bit-identical; only it is trained again.
    run = out / "seed1" / "rho1"
    reference = load_file(final)
    steps = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert steps[-2:] == ["step_00000002", "step_00000003"]
    for path in [run / "final", run / "study_complete.json", run / "checkpoints" / steps[-1]]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "trained 1 stage runs" in printed and "seed 1 rho1: trained 3 steps" in printed
    resumed = load_file(final)
    assert all((resumed[k] == reference[k]).all() for k in reference)

    # A different config under the same output directory is refused, naming the key.
    changed = [a.replace("training.learning_rate=0.003", "training.learning_rate=0.001") for a in args]
    assert changed != args
    with pytest.raises(ConfigError, match="training.learning_rate"):
        ns = build_parser().parse_args(changed)
        ns.func(ns)
