"""`wmtp eval CHECKPOINT`: the orchestration around generation, the sandbox and pass@k — what is
written, what counts as a subset, which prompt format, and where the temperature comes from."""

from __future__ import annotations

import json
import shutil

import pytest

from weighted_mtp.cli import main
from weighted_mtp.errors import ConfigError
from weighted_mtp.eval import run as eval_run
from weighted_mtp.eval.run import EvalSettings, evaluate_checkpoint, resolve_prompt_format, select_temperature
from weighted_mtp.eval.tasks import load_benchmark


@pytest.fixture()
def trained_run(tmp_path, micro_model_dir):
    """A directory shaped like a training run: config.yaml, metrics.jsonl, final/."""
    run = tmp_path / "run"
    shutil.copytree(micro_model_dir, run / "final")
    (run / "config.yaml").write_text("experiment: {name: fake}\n")
    (run / "metrics.jsonl").write_text("")
    return run


def test_prompt_format_follows_the_training_run(trained_run, micro_model_dir):
    from weighted_mtp.models.load import load_tokenizer

    assert resolve_prompt_format("auto", trained_run / "final")[0] == "alpaca"
    assert resolve_prompt_format("auto", micro_model_dir, load_tokenizer(micro_model_dir))[0] == "raw"
    assert resolve_prompt_format("raw", trained_run / "final") == ("raw", "given with --prompt-format")


def test_eval_writes_per_seed_results_and_marks_a_subset(trained_run, monkeypatch):
    # The micro model writes no working code, so feed the canonical solution to every other
    # sample: pass@k must then be exactly the estimator on c = n/2 for every task and seed.
    bench = load_benchmark("embedded", limit=3)
    canonical = {t.instruction: t.canonical_solution for t in bench.tasks}
    calls = []

    def fake_generate(model, tokenizer, prompts, cfg, **kwargs):
        from weighted_mtp.eval.generate import Generation

        calls.append(cfg.seed)
        out = []
        for i, prompt in enumerate(prompts):
            solution = next(code for instr, code in canonical.items() if instr in prompt)
            out.append(solution if i % 2 == 0 else "def nothing():\n    pass\n")
        return Generation(texts=out, new_tokens=[5] * len(out), seconds=2.0, forward_passes=5)

    monkeypatch.setattr("weighted_mtp.eval.run.generate_completions", fake_generate)
    settings = EvalSettings(benchmark="embedded", limit=3, n=4, ks=[1, 2], temperature=0.7, seeds=[0, 1])
    summary = evaluate_checkpoint(trained_run / "final", settings)
    assert calls == [0, 1]
    out = trained_run / "eval" / "embedded"
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["subset"] is True and summary["n_tasks"] == 3 and summary["n_tasks_total"] > 3
    assert summary["prompt_format"] == "alpaca" and summary["temperature_selected_on"] is None
    # Generation is timed apart from execution: 12 samples x 5 tokens per seed in 2 s per seed.
    assert summary["generated_tokens"] == 120 and summary["generation_seconds"] == 4.0
    assert summary["generated_tokens_per_s"] == 30.0 and summary["forward_passes"] == 10
    # pass@1 = c/n = 0.5; pass@2 = 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert summary["pass_at_k"]["1"] == pytest.approx([0.5, 0.5])
    assert summary["pass_at_k"]["2"] == pytest.approx([5 / 6, 5 / 6])
    for seed in (0, 1):
        rows = [json.loads(line) for line in (out / f"seed{seed}" / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 12 and sum(r["passed"] for r in rows) == 6
        per_task = [json.loads(line) for line in (out / f"seed{seed}" / "per_task.jsonl").read_text().splitlines()]
        assert [(r["n"], r["c"]) for r in per_task] == [(4, 2)] * 3


def test_real_generation_end_to_end_on_the_micro_model(micro_model_dir, tmp_path):
    settings = EvalSettings(benchmark="embedded", limit=2, n=2, ks=[1, 2], temperature=1.0, seeds=[3],
                            max_new_tokens=24)
    summary = evaluate_checkpoint(micro_model_dir, settings, tmp_path / "eval")
    assert summary["prompt_format"] == "raw"  # a plain model directory: the benchmark's own prompt
    rows = (tmp_path / "eval" / "embedded" / "seed3" / "samples.jsonl").read_text().splitlines()
    assert len(rows) == 4 and all("result" in json.loads(r) for r in rows)
    assert 0.0 <= summary["pass_at_k"]["1"][0] <= 1.0


def test_temperature_is_chosen_on_validation_only_and_read_back(trained_run, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="validation split only"):
        select_temperature(trained_run / "final", EvalSettings(split="test"), [0.2, 0.8])
    scores = {0.2: 0.3, 0.8: 0.5}

    def fake_evaluate(checkpoint, settings, output_dir=None, *, model_and_tokenizer=None):
        assert settings.split == "valid"
        return {"pass_at_k": {"1": [scores[settings.temperature]]}}

    monkeypatch.setattr(eval_run, "evaluate_checkpoint", fake_evaluate)
    monkeypatch.setattr(eval_run, "_load_model", lambda checkpoint: (None, None))
    choice = select_temperature(trained_run / "final", EvalSettings(split="valid", n=2, ks=[1]), [0.2, 0.8])
    assert choice["temperature"] == 0.8 and choice["selected_on"] == "embedded/valid"
    assert eval_run.resolve_temperature("auto", trained_run / "final", None) == (0.8, "embedded/valid")
    assert eval_run.resolve_temperature("0.4", trained_run / "final", None) == (0.4, None)


def test_cli_errors_name_the_option(trained_run, capsys):
    assert main(["eval", str(trained_run / "final"), "--temperature", "auto"]) == 2
    assert "temperature.json not found" in capsys.readouterr().err
    assert main(["eval", str(trained_run / "final"), "--n", "2", "--k", "1,5"]) == 2
    assert "--k 5 needs at least that many samples" in capsys.readouterr().err
    assert main(["eval", str(trained_run / "final"), "--temperature", "0", "--n", "3", "--k", "1"]) == 2
    assert "greedy" in capsys.readouterr().err
