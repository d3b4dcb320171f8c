"""`wmtp steper demo`: the whole StepER chain on the embedded world. The world teacher writes
trajectories for the train and valid questions; for each seed a StepER student and a Vanilla-KD
student (same blank model, same optimizer steps and batch size) are trained by the one training
loop and then answer the test questions with the interleaved retrieve-and-reason loop.
Finished runs and evaluations are reused, so an interrupted demo continues where it stopped."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from weighted_mtp.config import load_config
from weighted_mtp.models.load import load_tokenizer
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.steper.config import load_generate_config
from weighted_mtp.steper.inference import evaluate_student
from weighted_mtp.steper.pipeline import load_or_build_retriever, load_source, run_generation
from weighted_mtp.training.loop import train

ARMS = {"steper": "steper/steper.yaml", "vanilla_kd": "steper/vanilla_kd.yaml"}
ARM_DATA = {"steper": "steper.jsonl", "vanilla_kd": "final_step.jsonl"}
METRICS = ("em", "f1", "acc")


def _train_arm(configs: Path, arm: str, data_dir: Path, run_dir: Path, seed: int, overrides: list[str]):
    cfg = load_config(configs / ARMS[arm], [
        f"dataset.train={data_dir / 'train' / ARM_DATA[arm]}",
        f"dataset.validation={data_dir / 'valid' / ARM_DATA[arm]}",
        f"runtime.seed={seed}", f"data_sampling.seed={seed}", *overrides])
    if not (run_dir / "final" / "config.json").is_file():
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run starts over (no checkpoints kept)
        train(cfg, run_dir)
    return cfg


def _final_sigmas(run_dir: Path) -> dict[str, float]:
    last: dict[str, float] = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            event = json.loads(line)
            last.update({k.split("/", 1)[1]: v for k, v in event.items() if k.startswith("train/sigma_")})
    return last


def summarize_arms(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation over seeds of each metric, per arm."""
    out: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        stats: dict[str, float] = {"n_seeds": float(len(mine))}
        for key in [k for k in mine[0] if k not in ("arm", "seed") and isinstance(mine[0][k], (int, float))]:
            values = [float(r[key]) for r in mine]
            stats[f"{key}_mean"] = statistics.fmean(values)
            stats[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[arm] = stats
    return out


def run_demo(output_dir: str | Path, *, seeds: int = 3, configs: Path, train_overrides: list[str] = (),
             generate_overrides: list[str] = (), n_test: int | None = None, eval_batch_size: int = 64) -> dict:
    out = Path(output_dir)
    gen_cfg = load_generate_config(configs / "steper" / "generate.yaml",
                                   [f"output_dir={out / 'data'}", *generate_overrides])
    print("== teacher data ==")
    gen_stats = run_generation(gen_cfg)
    for split, s in gen_stats.items():
        print(f"{split}: {s['kept']}/{s['questions']} trajectories kept (dropped {s['dropped']}), rows {s['rows']}")
    source = load_source(gen_cfg)
    retriever = load_or_build_retriever(source, gen_cfg.retriever.kind, out / "data" / f"index-{gen_cfg.retriever.kind}")
    test_questions = source.questions["test"][: n_test or None]
    data_dir = Path(gen_cfg.output_dir)

    rows: list[dict[str, Any]] = []
    for seed in range(seeds):
        for arm in ARMS:
            run_dir = out / f"{arm}-seed{seed}"
            print(f"== {arm}, seed {seed} ==")
            _train_arm(configs, arm, data_dir, run_dir, seed, list(train_overrides))
            eval_path = run_dir / "eval" / "summary.json"
            if eval_path.is_file():
                summary = json.loads(eval_path.read_text())
            else:
                model_dir = run_dir / "final"
                model = MTPModel.from_pretrained(model_dir, n_future_tokens=1)
                summary, _ = evaluate_student(model, load_tokenizer(model_dir), test_questions, retriever,
                                              k=gen_cfg.retriever.k, max_steps=gen_cfg.max_steps,
                                              batch_size=eval_batch_size, out_path=run_dir / "eval" / "answers.jsonl")
                eval_path.write_text(json.dumps(summary, indent=2) + "\n")
            row = {"arm": arm, "seed": seed, **summary, **_final_sigmas(run_dir)}
            rows.append(row)
            print(f"{arm} seed {seed}: EM {summary['em']:.3f}  F1 {summary['f1']:.3f}  Acc {summary['acc']:.3f}")
    arms = summarize_arms(rows)
    comparison = {"runs": rows, "arms": arms, "teacher": gen_stats, "n_test_questions": len(test_questions)}
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    print(format_comparison(arms))
    print(f"comparison written to {out / 'comparison.json'}")
    return comparison


def format_comparison(arms: dict[str, dict[str, float]]) -> str:
    lines = [f"{'arm':<12} {'seeds':>5} " + " ".join(f"{m.upper():>15}" for m in METRICS)]
    for arm, s in arms.items():
        cells = " ".join(f"{s[f'{m}_mean']:>8.3f} ± {s[f'{m}_std']:.3f}" for m in METRICS)
        lines.append(f"{arm:<12} {int(s['n_seeds']):>5} {cells}")
    return "\n".join(lines)
