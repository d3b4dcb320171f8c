"""The study's report: study.md, study.html (the same blocks, via report/render.py) and
study.json (every number in the tables, and the per-seed values behind them).

The first thing it says is the answer: each arm against the baseline, with the paired
difference, its interval and p-value, and "no significant difference" where that is the case."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from weighted_mtp.report.render import Block, Heading, Para, Table, fmt_ci, fmt_metric, fmt_rate, to_html, to_markdown
from weighted_mtp.training.checkpoint import atomic_write_text


def _signed(v: float) -> str:
    return f"{v:+.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def _p(v: float) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


def _seconds(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def answer_lines(analysis: dict[str, Any]) -> list[str]:
    """One sentence per (metric, arm): the study's answer in words."""
    base = analysis["baseline"]
    lines = []
    for metric, m in analysis["metrics"].items():
        for arm, c in m["vs_baseline"].items():
            silent = (" Neither arm solves any of these tasks, so the comparison carries no information."
                      if c["mean_a"] == 0 and c["mean_b"] == 0 else "")
            lines.append(f"{metric}, {arm} - {base}: {_signed(c['diff'])} "
                         f"(95% CI {fmt_ci(c['ci_lo'], c['ci_hi'])}, p = {_p(c['p_value'])}, "
                         f"Holm p = {_p(c['p_holm'])}, {c['n_tasks']} tasks, seeds {c['seeds']}): {c['verdict']}."
                         + silent)
    return lines


def _json_safe(obj: Any) -> Any:
    """NaN and infinity (an interval from one seed) as null: strict JSON readers reject them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def build_blocks(study: dict[str, Any], analysis: dict[str, Any]) -> list[Block]:
    base = analysis["baseline"]
    arms = study["arms"]
    blocks: list[Block] = [Heading(1, f"Study: token weightings against {base!r}")]
    blocks.append(Para(f"Arms {', '.join(f'`{a}`' for a in arms)}; seeds {study['seeds']}; benchmark "
                       f"`{study['benchmark']}` ({study['tasks_text']}); every arm of a seed trains from the same "
                       "model on the same rows in the same order and differs only in its token weights. "
                       f"Command: `{study['command']}`."))
    blocks.append(Heading(2, "Answer"))
    lines = answer_lines(analysis)
    if lines:
        blocks += [Para("- " + line) for line in lines]
    else:
        blocks.append(Para("No comparison yet: no arm has been evaluated together with the baseline."))
    blocks.append(Para(f"A difference is claimed only when its Holm-adjusted p-value is below {analysis['alpha']}; "
                       "otherwise the table says \"no significant difference\", which is not evidence that the arms "
                       "are equal: the interval says how large a difference the study can rule out."))

    metrics = list(analysis["metrics"])
    blocks.append(Heading(2, "pass@k per arm"))
    blocks.append(Para("Mean over seeds with the 95% t-interval over seeds (each seed's value is the mean over "
                       "tasks); T is the sampling temperature chosen on the validation split for each seed."))
    header = ["arm"] + [f"{m} [95% CI over seeds]" for m in metrics] + ["per seed", "T per seed", "val CE"]
    rows = []
    for arm in arms:
        cells = [arm]
        per_seed = []
        for metric in metrics:
            r = analysis["metrics"][metric]["arms"].get(arm)
            cells.append("-" if r is None else f"{fmt_rate(r['mean'])} {fmt_ci(r['ci_lo'], r['ci_hi'])}")
            if r is not None:
                per_seed.append(f"{metric}: " + ", ".join(fmt_rate(v) for v in r["per_seed"].values()))
        temps = study["temperatures"].get(arm, {})
        val = study["val_loss"].get(arm, {})
        cells += ["; ".join(per_seed) or "-", ", ".join(f"{t:g}" for t in temps.values()) or "-",
                  ", ".join(fmt_metric(v) for v in val.values()) or "-"]
        rows.append(cells)
    blocks.append(Table(header, rows))

    blocks.append(Heading(2, f"Each arm against {base!r}, paired by task"))
    blocks.append(Para(f"Difference = mean over tasks of (arm - {base}), each arm's per-task value averaged over "
                       f"seeds. Interval: {analysis['interval']}, {analysis['n_boot']} resamples. p: "
                       f"{analysis['test']} ({analysis['n_resamples']} sign patterns when not enumerated exactly). "
                       f"Holm: {analysis['multiple_comparisons']}. Per-seed: the difference of the seed means, with "
                       f"its {analysis['seed_interval']}."))
    header = ["metric", "arm", "arm mean", f"{base} mean", "difference", "95% paired bootstrap CI", "p", "Holm p",
              "tasks better / worse", "per-seed differences [t-CI]", "verdict"]
    rows = []
    for metric, m in analysis["metrics"].items():
        for arm, c in m["vs_baseline"].items():
            rows.append([metric, arm, fmt_rate(c["mean_a"]), fmt_rate(c["mean_b"]), _signed(c["diff"]),
                         fmt_ci(c["ci_lo"], c["ci_hi"]), _p(c["p_value"]), _p(c["p_holm"]),
                         f"{c['n_a_better']} / {c['n_b_better']} of {c['n_tasks']}",
                         ", ".join(_signed(d) for d in c["seed_diffs"]) + " "
                         + fmt_ci(c["seed_diff_ci_lo"], c["seed_diff_ci_hi"]), c["verdict"]])
    blocks.append(Table(header, rows) if rows else Para("No paired comparison available yet."))

    blocks.append(Heading(2, "Cost"))
    cost = study["cost"]

    def cell(c: dict[str, float] | None) -> str:
        return "-" if c is None else f"{_seconds(c['wall_s'])} ({_seconds(c['cpu_s'])} CPU)"

    header = ["stage"] + [f"seed {s}: wall (CPU)" for s in study["seeds"]]
    rows = [[stage] + [cell(by_seed.get(str(s))) for s in study["seeds"]] for stage, by_seed in cost["train"].items()]
    rows.append(["evaluation (all arms)"] + [cell(cost["eval"].get(str(s))) for s in study["seeds"]])
    blocks.append(Table(header, rows))
    blocks.append(Para(f"Training {_seconds(cost['train_wall_s'])} wall ({_seconds(cost['train_cpu_s'])} CPU), "
                       f"evaluation {_seconds(cost['eval_wall_s'])} wall ({_seconds(cost['eval_cpu_s'])} CPU): "
                       "summed over the calls that did the work; CPU is this process's, all threads, so it does "
                       f"not grow when other programs share the machine ({study['machine']})."))
    blocks.append(Heading(2, "Plan"))
    blocks.append(Table(["stage", "role", "config", "reads"],
                        [[st["name"], "arm" if st["arm"] else "model", st["config"],
                          "; ".join(f"{key} <- {name}/final" for key, name in st["links"]) or "-"]
                         for st in study["stages"]]))
    blocks.append(Para(f"Every stage of seed S: `runtime.seed=S data_sampling.seed=S`"
                       + (f"; overrides: `{' '.join(study['overrides'])}`" if study["overrides"] else "") + "."))
    return blocks


def write_study_report(output_dir: Path, study: dict[str, Any], analysis: dict[str, Any]) -> tuple[Path, Path, Path]:
    """report/study.md, report/study.html, report/study.json (each replaced atomically)."""
    blocks = build_blocks(study, analysis)
    out = output_dir / "report"
    md, html, js = out / "study.md", out / "study.html", out / "study.json"
    atomic_write_text(md, to_markdown(blocks))
    atomic_write_text(html, to_html(blocks, {}, "wmtp study"))
    atomic_write_text(js, json.dumps(_json_safe({"study": study, **analysis}), indent=2, default=str) + "\n")
    return md, html, js
