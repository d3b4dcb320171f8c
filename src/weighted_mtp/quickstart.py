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


def run_quickstart(output_dir: Path, configs_root: Path, steps: int | None = None) -> dict[str, TrainResult]:
    overrides = [f"training.max_steps={steps}"] if steps else []
    start = time.perf_counter()
    results = {}
    cfg = load_config(configs_root / "baseline" / "baseline.yaml", overrides)
    run_dir = output_dir / "baseline"
    if run_dir.exists():  # never delete an earlier run: move it aside
        moved = run_dir.with_name(f"baseline.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(moved)
        print(f"moved the previous quickstart run to {moved}")
    results["baseline"] = train(cfg, run_dir, resume=False)
    print()
    for name, result in results.items():
        print(summarise(name, result))
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s; everything is under {output_dir}")
    return results
