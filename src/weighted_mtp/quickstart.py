"""`wmtp quickstart`: the README's main job. Builds the embedded data and micro model, trains the
baseline, and prints what a newcomer wants to see: per-head losses, throughput, where things are.
Later stages (critic, verifiable, ...) add their arms here, each in its own run directory."""

from __future__ import annotations

import math
import time
from pathlib import Path

from weighted_mtp.config import load_config
from weighted_mtp.training.loop import TrainResult, train


def summarise(name: str, result: TrainResult) -> str:
    k = 1
    lines = [f"== {name}: {result.steps} steps, run directory {result.run_dir}"]
    lines.append(f"   {'head':>6} {'train CE':>10} {'val CE':>10}")
    while f"train/ce_head{k}" in result.last_train or f"val/ce_head{k}" in result.last_val:
        tr = result.last_train.get(f"train/ce_head{k}", math.nan)
        va = result.last_val.get(f"val/ce_head{k}", math.nan)
        lines.append(f"   {k:>6} {tr:>10.4f} {va:>10.4f}")
        k += 1
    lines.append(f"   train loss {result.last_train.get('train/loss', math.nan):.4f}, "
                 f"val loss {result.last_val.get('val/loss', math.nan):.4f}")
    lines.append(f"   throughput {result.tokens_per_s:,.0f} tokens/s, peak memory {result.peak_memory_mb:,.0f} MB")
    lines.append(f"   MLflow store: {result.tracking_uri}  (mlflow ui --backend-store-uri {result.tracking_uri})")
    lines.append(f"   metrics: {result.run_dir / 'metrics.jsonl'}")
    lines.append(f"   checkpoints: {result.run_dir / 'checkpoints'} (best: {result.best_checkpoint})")
    lines.append(f"   final model (HF-loadable + mtp_heads.safetensors): {result.final_dir}")
    return "\n".join(lines)


CRITIC_ROWS = [("val/pairwise_accuracy", "val pairwise accuracy"), ("train_eval/pairwise_accuracy", "train pairwise accuracy"),
               ("gap/pairwise_accuracy", "train - val accuracy gap"), ("val/auc", "val AUC"),
               ("gap/auc", "train - val AUC gap"), ("val/f1", "val F1"), ("val/mean_correct", "val mean V correct"),
               ("val/mean_incorrect", "val mean V incorrect"), ("val/gap", "val mean V gap"),
               ("val/position_corr", "val corr(V, position)"), ("val/spikiness", "val spikiness")]


def critic_table(results: dict[str, TrainResult]) -> str:
    names = list(results)
    lines = [f"   {'critic metric':<26}" + "".join(f"{n:>18}" for n in names)]
    for key, label in CRITIC_ROWS:
        lines.append(f"   {label:<26}" + "".join(f"{results[n].last_val.get(key, math.nan):>18.3f}" for n in names))
    return "\n".join(lines)


def _fresh(run_dir: Path) -> Path:
    if run_dir.exists():  # never delete an earlier run: move it aside
        moved = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(moved)
        print(f"moved the previous {run_dir.name} run to {moved}")
    return run_dir


def run_quickstart(output_dir: Path, configs_root: Path, steps: int | None = None) -> dict[str, TrainResult]:
    """Baseline policy, then a pointwise and a pairwise critic on its trunk."""
    overrides = [f"training.max_steps={steps}"] if steps else []
    start = time.perf_counter()
    results = {}
    cfg = load_config(configs_root / "baseline" / "baseline.yaml", overrides)
    results["baseline"] = train(cfg, _fresh(output_dir / "baseline"))
    policy = results["baseline"].final_dir
    for name, config in (("critic_pointwise", "critic.yaml"), ("critic_pairwise", "critic_pairwise.yaml")):
        cfg = load_config(configs_root / "critic" / config, overrides + [f"models.policy.path={policy}"])
        results[name] = train(cfg, _fresh(output_dir / name))
    print()
    print(summarise("baseline", results["baseline"]))
    print(f"== critics on the baseline trunk (frozen), validated on unseen problems")
    for name in ("critic_pointwise", "critic_pairwise"):
        print(f"   {name}: {results[name].steps} steps, run directory {results[name].run_dir}")
    print(critic_table({n: results[n] for n in ("critic_pointwise", "critic_pairwise")}))
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s; everything is under {output_dir}")
    return results
