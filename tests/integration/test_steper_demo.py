"""`wmtp steper demo` end to end on a small world with tiny budgets: teacher data, both arms
per seed through the one training loop, the student in the interleaved loop, comparison.json."""

from __future__ import annotations

import json

from weighted_mtp.cli import main


def test_steper_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    train = ["training.max_steps=3", "training.batch_size=4", "data_sampling.val_n_samples=4", "mlflow.enabled=false",
             "training.log_interval=1", "training.objective_learning_rate=0.1"]
    generate = ["source.world.n_train=40", "source.world.n_valid=8", "source.world.n_test=4"]
    argv = ["steper", "demo", "--output-dir", str(out), "--seeds", "2", "--n-test", "4"]
    argv += [a for o in train for a in ("--override", o)] + [a for o in generate for a in ("--generate-override", o)]
    assert main(argv) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    runs = comparison["runs"]
    assert sorted((r["arm"], r["seed"]) for r in runs) == [("steper", 0), ("steper", 1), ("vanilla_kd", 0),
                                                             ("vanilla_kd", 1)]
    for r in runs:
        assert 0.0 <= r["em"] <= r["acc"] + 1e-9 <= 1.0 + 1e-9 and r["n_questions"] == 4.0
        assert 0.0 <= r["recall_step1"] <= r["recall_step5"] <= 1.0
    steper = [r for r in runs if r["arm"] == "steper"]
    assert all(abs(r["sigma_init"] - 1.0) > 1e-3 for r in steper)  # the sigmas were learned
    arms = comparison["arms"]
    assert arms["steper"]["n_seeds"] == 2.0 and "em_std" in arms["vanilla_kd"]
    assert comparison["teacher"]["train"]["questions"] == 40
    assert "vanilla_kd" in capsys.readouterr().out
    # A second call reuses the finished runs and evaluations.
    before = (out / "steper-seed0" / "eval" / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "steper-seed0" / "eval" / "summary.json").stat().st_mtime_ns == before
