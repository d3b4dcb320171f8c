"""`wmtp quickstart`: the README's main job. Builds the embedded data and micro model, trains the
uniform baseline, a pairwise critic, the critic-weighted arm, its two matched controls and Rho-1,
and prints what a newcomer wants to see: per-head losses, throughput, the critic's accuracy and
one table comparing the arms, which differ only in their token weights (same rows in the same
order, same normaliser, same budget)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from weighted_mtp.config import load_config
from weighted_mtp.eval.run import EvalSettings, evaluate_checkpoint
from weighted_mtp.log import get_logger
from weighted_mtp.objectives import OBJECTIVES
from weighted_mtp.report import write_report
from weighted_mtp.training.data_feed import training_order_digest
from weighted_mtp.training.loop import TrainResult, train

log = get_logger(__name__)


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

# (key in last_val or last_train, label): the arms' comparison. Weight statistics are the last
# logging interval's (response tokens of the training batches).
ARM_ROWS = [("val/loss", "val CE, mean over heads")] + [(f"val/ce_head{k}", f"val CE head {k}") for k in range(1, 5)] + [
    ("train/weight/mean", "weight mean"), ("train/weight/std", "weight std"), ("train/weight/p50", "weight p50"),
    ("train/weight/p95", "weight p95"), ("train/weight/max", "weight max"),
    ("train/weight/fraction_clipped", "weight fraction clipped"),
    ("train/weight/fraction_at_min", "weight fraction at min"),
    ("train/weight/effective_token_fraction", "effective token fraction"),
    ("train/weight/corr_distance_to_end", "corr(weight, tokens to end)"),
    ("train/weight/selection_ratio", "rho-1 selection ratio"),
    ("train/weighted_unweighted_ratio", "weighted / unweighted loss"),
    ("train/pairwise_accuracy", "critic train pair accuracy"), ("train/value_loss", "critic value loss"),
    ("train/tokens_per_s", "train tokens/s"),
]


def critic_table(results: dict[str, TrainResult]) -> str:
    names = list(results)
    lines = [f"   {'critic metric':<26}" + "".join(f"{n:>18}" for n in names)]
    for key, label in CRITIC_ROWS:
        lines.append(f"   {label:<26}" + "".join(f"{results[n].last_val.get(key, math.nan):>18.3f}" for n in names))
    return "\n".join(lines)


def arms_table(results: dict[str, TrainResult], facts: dict[str, dict[str, str]] | None = None) -> str:
    """One row per metric, one column per arm; '-' where an arm has no such metric. `facts`:
    extra text rows (label -> arm -> text), e.g. what each arm trained on."""
    names = list(results)
    width = max(14, *(len(n) + 2 for n in names))
    lines = [f"   {'metric':<28}" + "".join(f"{n:>{width}}" for n in names)]
    for label, row in (facts or {}).items():
        lines.append(f"   {label:<28}" + "".join(f"{row.get(n, '-'):>{width}}" for n in names))
    for key, label in ARM_ROWS:
        cells = []
        for n in names:
            value = {**results[n].last_train, **results[n].last_val}.get(key)
            if key == "train/tokens_per_s":
                value = results[n].tokens_per_s
            cells.append(f"{'-':>{width}}" if value is None or not math.isfinite(value) else
                         f"{value:>{width},.0f}" if key == "train/tokens_per_s" else f"{value:>{width}.4f}")
        lines.append(f"   {label:<28}" + "".join(cells))
    return "\n".join(lines)


def _fresh(run_dir: Path) -> Path:
    if run_dir.exists():  # never delete an earlier run: move it aside
        moved = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(moved)
        log.info(f"moved the previous {run_dir.name} run to {moved}")
    return run_dir


# The full comparison: every arm for three seeds, greedy pass@1 and sampled pass@k, paired
# differences against the baseline with bootstrap intervals (README, "The comparison").
STUDY_HINT = (
    "the full comparison, 5 arms x 3 seeds with paired bootstrap intervals against the baseline:\n"
    "   wmtp study --seeds 0,1,2 --no-sampled --output-dir runs/study   # greedy pass@1: 1,095 s measured on 2 CPU cores\n"
    "   drop --no-sampled to add sampled pass@1/5/10 (10 samples per task, temperature chosen on the validation\n"
    "   split; estimated at about 10x the evaluation time); run the same command again to continue where it stopped")

POLICY_ARMS = {  # run directory -> config; every arm starts from the same micro model
    "baseline": "baseline/baseline.yaml",
    "verifiable_pairwise": "verifiable/verifiable_pairwise.yaml",
    "random_matched": "controls/random_matched.yaml",
    "shuffled": "controls/shuffled.yaml",
    "rho1": "rho1/rho1.yaml",
}


def run_quickstart(output_dir: Path, configs_root: Path, steps: int | None = None,
                   eval_limit: int | None = None, overrides: list[str] | None = None) -> dict[str, TrainResult]:
    """Baseline -> pairwise critic on its trunk -> the critic-weighted arm (that critic scores
    tokens and its value head keeps learning, with the pairwise auxiliary loss), its random and
    shuffled controls (the same critic, its weights rearranged) and Rho-1 with the baseline's
    next-token head as the reference. Every policy arm starts from the same micro model and reads
    the same rows in the same order with the same normaliser and step budget (the table's
    "training rows" digest shows it), and is validated on the same held-out rows. Then greedy
    pass@1 of each arm on the embedded test problems (sandboxed) and a report comparing them."""
    overrides = list(overrides or []) + ([f"training.max_steps={steps}"] if steps else [])
    start = time.perf_counter()
    results: dict[str, TrainResult] = {}
    configs = {name: configs_root / path for name, path in POLICY_ARMS.items()}
    cfg = load_config(configs["baseline"], overrides)
    results["baseline"] = train(cfg, _fresh(output_dir / "baseline"))
    policy = results["baseline"].final_dir
    cfg = load_config(configs_root / "critic" / "critic_pairwise.yaml", overrides + [f"models.policy.path={policy}"])
    results["critic_pairwise"] = train(cfg, _fresh(output_dir / "critic_pairwise"))
    critic = results["critic_pairwise"].final_dir
    arm_overrides = overrides + [f"models.critic.path={critic}", f"models.reference.path={policy}"]
    digests = {}
    for name, path in configs.items():
        cfg = load_config(path, arm_overrides)
        digests[name] = training_order_digest(cfg, OBJECTIVES[cfg.experiment.stage](cfg).batch_kind == "pairwise")
        if name != "baseline":
            results[name] = train(cfg, _fresh(output_dir / name))
    arms = tuple(POLICY_ARMS)
    print()
    print(summarise("baseline", results["baseline"]))
    print(f"== pairwise critic on the baseline trunk (frozen), validated on unseen problems: "
          f"{results['critic_pairwise'].steps} steps, run directory {results['critic_pairwise'].run_dir}")
    print(critic_table({"critic_pairwise": results["critic_pairwise"]}))
    print("== policy arms: same micro model, rows, order, normaliser and step budget; they differ only in "
          "their token weights (val CE is unweighted in every arm; weights are over response tokens)")
    for name in arms[1:]:
        print(f"   {name}: {results[name].steps} steps, run directory {results[name].run_dir}")
    print(f"   critic: {critic}; rho1 reference: the baseline's next-token head ({policy})")
    loaded = {name: load_config(configs[name], arm_overrides) for name in arms}
    facts = {"training rows (digest)": digests,
             "loss normalisation": {n: c.training.loss.normalization for n, c in loaded.items()}}
    print(arms_table({n: results[n] for n in arms}, facts))
    print("== greedy pass@1 on the embedded test problems (each program sandboxed)")
    settings = EvalSettings(benchmark="embedded", split="test", n=1, ks=[1], temperature=0.0, seeds=[0],
                            max_new_tokens=160, limit=eval_limit)
    for name in arms:
        summary = evaluate_checkpoint(results[name].final_dir, settings)
        subset = f" (subset: {summary['n_tasks']} of {summary['n_tasks_total']})" if summary["subset"] else ""
        print(f"   {name:<22} pass@1 {summary['pass_at_k']['1'][0]:.4f} on {summary['n_tasks']} problems{subset}")
    md, html = write_report([results[n].run_dir for n in ("critic_pairwise", *arms)], output_dir / "report",
                            benchmark="embedded")
    print(f"report: {html}\n        {md}")
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s; everything is under {output_dir}")
    print(STUDY_HINT)
    return results
