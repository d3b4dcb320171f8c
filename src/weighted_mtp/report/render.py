"""`write_report`: one comparison of training arms, as report.md (PNGs beside it) and a
self-contained report.html (PNGs inlined), also attached to each run's own MLflow run.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and written
twice, so the markdown and the HTML can never disagree. Numbers are formatted by the functions
below (`fmt_metric`, `fmt_rate`), which tests use to find them."""

from __future__ import annotations

import base64
import html
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from weighted_mtp.errors import WMTPError
from weighted_mtp.log import get_logger
from weighted_mtp.objectives import OBJECTIVES
from weighted_mtp.report import plots
from weighted_mtp.report.collect import EvalResult, RunSummary, collect_run, unique_names
from weighted_mtp.report.stats import bootstrap_ci, mean_ci_over_seeds
from weighted_mtp.report.token_weights import example_token_weights

log = get_logger(__name__)

WEIGHT_KEYS = ["mean", "std", "p50", "p95", "max", "fraction_clipped", "fraction_at_min", "effective_token_fraction",
               "selection_ratio", "corr_distance_to_end"]
EVAL_SETTINGS = ["split", "subset", "n_tasks", "n_tasks_total", "n", "seeds", "temperature", "top_p",
                 "prompt_format", "temperature_selected_on"]


# ---- formatting --------------------------------------------------------------------------------

def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_metric(v: Any) -> str:
    """Losses, CE and weight statistics: 4 decimals; '-' where an arm has no such value."""
    return f"{v:.4f}" if _finite(v) else "-"


def fmt_rate(v: Any) -> str:
    """pass@k (a fraction of tasks): 3 decimals."""
    return f"{v:.3f}" if _finite(v) else "-"


def fmt_ci(lo: float, hi: float) -> str:
    return f"[{lo:.3f}, {hi:.3f}]" if _finite(lo) and _finite(hi) else "-"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


# ---- the document ------------------------------------------------------------------------------

@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str  # `code` spans are the only markup


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    filename: str
    caption: str


Block = Heading | Para | Table | Image


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Iterable[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |",
                     "|" + "|".join("---" for _ in b.header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.filename})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


def _html_text(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f2f2f2}td{font-variant-numeric:tabular-nums}figure{margin:1.5em 0}img{max-width:100%}
figcaption{color:#555;font-size:13px}code{background:#f4f4f4;padding:0 3px}"""


def to_html(blocks: Iterable[Block], images: dict[str, bytes], title: str) -> str:
    """Self-contained: styles inline, every image a base64 data URI, no external reference."""
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{HTML_STYLE}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_html_text(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(images[b.filename]).decode("ascii")
            out.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(b.caption)}\">"
                       f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
    out.append("</body></html>\n")
    return "\n".join(out)


# ---- sections ----------------------------------------------------------------------------------

def _train_items(run: RunSummary) -> str:
    """Pairwise stages train on (correct, incorrect) pairs, counted by their own key."""
    c = run.config_value
    pairwise = run.stage == "verifiable" or (run.stage == "critic" and c("training.loss_type") == "pairwise")
    if pairwise:
        return f"{c('data_sampling.pairwise.n_pairs') or c('data_sampling.n_samples', '?')} train pairs"
    return f"{c('data_sampling.n_samples', '?')} train rows"


def config_highlights(run: RunSummary) -> str:
    """The settings that tell arms apart, in a few words (the full config is in config.yaml)."""
    c = run.config_value
    parts = [f"K={c('models.policy.n_future_tokens', '?')}", f"lr {c('training.learning_rate', '?')}",
             f"batch {c('training.batch_size', '?')}x{c('training.gradient_accumulation_steps', 1)}",
             _train_items(run), f"loss {c('training.loss.normalization', '?')}",
             f"seed {c('runtime.seed', '?')}"]
    policy = c("models.policy.path")
    if policy and policy != "embedded:micro-llama":
        parts.append(f"policy {policy}")
    if run.stage == "rho1":
        parts.append(f"rho1 {c('training.weighting.rho1_selection')} {c('training.weighting.rho1_k_percent')} "
                     f"({c('training.weighting.rho1_mode')})")
        parts.append(f"reference {c('models.reference.path') or 'ref_ce column'}")
    elif run.stage == "verifiable":
        mode = c("training.critic_mode")
        parts.append(f"critic {mode}" + (f" {c('models.critic.path')}" if mode == "separate" else "")
                     + (" (trainable head)" if c("training.critic_trainable") else ""))
        if run.scheme == "critic":
            parts.append(f"beta {c('training.weighting.beta')}, clip [{c('training.weighting.min_weight')}, "
                         f"{c('training.weighting.max_weight')}]")
        if c("training.use_pairwise"):
            parts.append(f"pairwise aux {c('training.aux_coef')}")
    elif run.stage == "critic":
        parts.append(f"critic loss {c('training.loss_type')}")
    return ", ".join(parts)


def runs_section(runs: list[RunSummary], labels: list[str]) -> list[Block]:
    rows = [[label, r.stage, r.scheme, str(r.steps), str(r.run_dir), config_highlights(r)]
            for label, r in zip(labels, runs)]
    return [Heading(2, "Runs"), Table(["arm", "stage", "scheme", "steps", "run directory", "config"], rows)]


def _n_heads(runs: list[RunSummary]) -> int:
    heads = [int(m.group(1)) for r in runs for k in r.last if (m := re.fullmatch(r"val/ce_head(\d+)", k))]
    return max(heads, default=0)


def validation_section(runs: list[RunSummary], labels: list[str]) -> list[Block]:
    keys = ["val/loss"] + [f"val/ce_head{k}" for k in range(1, _n_heads(runs) + 1)]
    rows = [[label] + [fmt_metric(r.final_val.get(k)) for k in keys] for label, r in zip(labels, runs)]
    return [Heading(2, "Final validation"),
            Para("Unweighted cross-entropy on the validation split at the last validation of each run "
                 "(the same quantity in every arm, so lower is better across arms)."),
            Table(["arm"] + keys, rows)]


def weight_stats_section(runs: list[RunSummary], labels: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Weight statistics")]
    weighted = [(label, r) for label, r in zip(labels, runs) if "train/weight/mean" in r.last]
    if not weighted:
        return blocks + [Para("No arm logged token weights (baseline and critic stages train unweighted).")]
    keys = [k for k in WEIGHT_KEYS if any(f"train/weight/{k}" in r.last for _, r in weighted)]
    rows = [[label] + [fmt_metric(r.last.get(f"train/weight/{k}")) for k in keys] for label, r in weighted]
    return blocks + [Para("Token weights over the response tokens of the last logging interval of training. "
                          "corr_distance_to_end is the Spearman correlation of a token's weight with the number "
                          "of response tokens after it: far from 0, the weights encode the position in the "
                          "response rather than (only) credit."),
                     Table(["arm"] + keys, rows)]


def _grid_cell(run: RunSummary) -> tuple[str, str]:
    """(NTP|MTP, uniform|weighted) of a policy run, from its config."""
    k = int(run.config_value("models.policy.n_future_tokens", 4) or 4)
    weighted = run.stage != "baseline" and run.scheme not in ("uniform", "")
    return ("NTP (K=1)" if k == 1 else f"MTP (K={k})"), ("weighted" if weighted else "uniform")


def grid_section(runs: list[RunSummary], labels: list[str], benchmark: str | None) -> list[Block]:
    """Seed 002's 2x2 comparison {NTP, MTP} x {uniform, weighted}, when the runs fill both rows:
    head-1 validation CE (the next-token loss every cell has) and pass@1 where evaluated."""
    cells: dict[tuple[str, str], list[str]] = {}
    policy = [(label, r) for label, r in zip(labels, runs) if r.stage in ("baseline", "verifiable", "rho1")]
    for label, r in policy:
        ce = fmt_metric(r.final_val.get("val/ce_head1"))
        evals = r.evals.get(benchmark) if benchmark else next(iter(r.evals.values()), None)
        p1 = fmt_rate(float(np.mean(evals.per_seed(1)))) if evals is not None and evals.per_seed(1) else "-"
        cells.setdefault(_grid_cell(r), []).append(f"{label}: CE1 {ce}, pass@1 {p1}")
    rows_k = sorted({row for row, _ in cells})
    if len(rows_k) < 2:
        return []
    rows = [[row] + ["; ".join(cells.get((row, col), ["-"])) for col in ("uniform", "weighted")] for row in rows_k]
    return [Heading(2, "NTP / MTP x uniform / weighted"),
            Para("Each cell: the runs of that kind, with head-1 validation CE (next-token loss, the quantity "
                 "every cell shares) and pass@1 (mean over seeds) where evaluated."),
            Table(["", "uniform", "weighted"], rows)]


def _subset_text(summary: dict) -> str:
    n, total = summary.get("n_tasks"), summary.get("n_tasks_total")
    if summary.get("subset"):
        return f"subset ({n} of {total} tasks)"
    return str(n)


def _eval_settings_row(label: str, ev: EvalResult) -> list[str]:
    s = ev.summary
    seeds = s.get("seeds") or []
    return [label, str(s.get("split", "-")), _subset_text(s), str(s.get("n", "-")), str(len(seeds)),
            str(s.get("temperature", "-")), str(s.get("top_p", "-")),
            str(s.get("temperature_selected_on") or "fixed (not selected)"), str(s.get("prompt_format", "-")),
            str(s.get("checkpoint", "-"))]


def _eval_result_rows(label: str, ev: EvalResult) -> list[list[str]]:
    rows = []
    for k in ev.ks:
        per_seed = ev.per_seed(k)
        mean, lo, hi = mean_ci_over_seeds(per_seed, bounds=(0.0, 1.0))
        seeds_ci = fmt_ci(lo, hi) if len(per_seed) > 1 else "- (one seed)"
        if k in ev.per_task:
            _, blo, bhi = bootstrap_ci(ev.per_task[k])
            tasks_ci = fmt_ci(blo, bhi)
        else:
            tasks_ci = "- (no per-task files)"
        rows.append([label, f"pass@{k}", fmt_rate(mean), seeds_ci, tasks_ci])
    return rows


def evaluation_section(runs: list[RunSummary], labels: list[str], benchmark: str | None) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Evaluation")]
    benchmarks = sorted({b for r in runs for b in r.evals}) if benchmark is None else [benchmark]
    benchmarks = [b for b in benchmarks if any(b in r.evals for r in runs)]
    if not benchmarks:
        what = f"of benchmark `{benchmark}` " if benchmark else ""
        return blocks + [Para(f"No evaluation {what}exists yet for these runs: no `eval/<benchmark>/summary.json` "
                              "in any run directory (run `wmtp eval` on each run first).")]
    for bench in benchmarks:
        have = [(label, r.evals[bench]) for label, r in zip(labels, runs) if bench in r.evals]
        missing = [label for label, r in zip(labels, runs) if bench not in r.evals]
        blocks.append(Heading(3, bench))
        blocks.append(Table(["arm", "split", "tasks", "samples per task", "seeds", "temperature", "top_p",
                             "temperature selected on", "prompt", "checkpoint"],
                            [_eval_settings_row(label, ev) for label, ev in have]))
        blocks.append(Para("pass@k: mean over generation seeds; 95% CI over seeds: t-interval of the per-seed "
                           "values (sampling noise); 95% CI over tasks: percentile bootstrap resampling tasks "
                           "(2000 resamples; how much another draw of problems would move it)."))
        blocks.append(Table(["arm", "metric", "mean", "95% CI over seeds", "95% CI over tasks"],
                            [row for label, ev in have for row in _eval_result_rows(label, ev)]))
        settings = {tuple(str(ev.summary.get(k)) for k in EVAL_SETTINGS) for _, ev in have}
        if len(settings) > 1:
            blocks.append(Para("Note: the arms were evaluated with different settings (split, tasks, samples, "
                               "seeds, temperature, top_p or prompt format); their pass@k do not compare directly."))
        if missing:
            blocks.append(Para(f"Not evaluated on {bench} yet: {', '.join(missing)}."))
    return blocks


def curves_section(runs: list[RunSummary], labels: list[str], images: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Training curves")]
    figures = plots.training_curves({label: r.history for label, r in zip(labels, runs)})
    captions = {"loss": "train/loss (each arm's own, possibly weighted, objective) and val/loss (unweighted CE).",
                "val_ce_heads": "Validation CE of each MTP head (unweighted)."}
    for family, png in figures.items():
        name = f"curves_{family}.png"
        images[name] = png
        blocks.append(Image(name, captions.get(family, family)))
    if not figures:
        blocks.append(Para("No loss was logged."))
    return blocks


def weights_section(runs: list[RunSummary], labels: list[str], images: dict[str, bytes], n_examples: int,
                    enabled: bool) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Token weights")]
    weighted = [(label, r) for label, r in zip(labels, runs)
                if r.stage in OBJECTIVES and OBJECTIVES[r.stage].applies_token_weights]
    if not enabled:
        return blocks + [Para("Token weights were not computed (`--no-weights`).")]
    if not weighted:
        return blocks + [Para("No arm applies token weights (baseline and critic stages train unweighted).")]
    blocks.append(Para("Recomputed by each arm's objective from its final model on the first validation rows "
                       "(one batch; batch-relative schemes such as Rho-1's top-k select within it)."))
    used: set[str] = set()
    for label, run in weighted:
        s = slug(label)
        while s in used:
            s += "_"
        used.add(s)
        try:
            sample = example_token_weights(run.run_dir, n_examples=n_examples)
        except WMTPError as e:
            blocks.append(Para(f"{label}: token weights unavailable: {e}"))
            continue
        if sample is None:
            continue
        w = sample.target_weights
        images[f"weights_{s}.png"] = plots.weight_histogram(w, f"{label}: token weights ({w.size} target tokens)")
        blocks.append(Heading(3, label))
        blocks.append(Image(f"weights_{s}.png", f"{label}: distribution of target-token weights (log counts)."))
        vmin, vmax = (float(w.min()), float(w.max())) if w.size else (None, None)
        for i, example in enumerate(sample.examples, start=1):
            name = f"heatmap_{s}_{i}.png"
            images[name] = plots.token_heatmap(example, f"{label}: validation example {i}", vmin=vmin, vmax=vmax)
            blocks.append(Image(name, f"{label}: weights over validation example {i} (colour: weight; grey: prompt)."))
    return blocks


# ---- MLflow ------------------------------------------------------------------------------------

def log_to_mlflow(run_dir: Path, paths: list[Path], artifact_path: str = "report") -> bool:
    """Attach files to the run's own MLflow run (the sqlite store in its directory). Nothing is
    created: no store, no run id, or an unknown run id -> False. Artifacts are only written where
    the run keeps them inside its directory, so a moved run never writes to its old location."""
    db, id_file = run_dir / "mlflow.db", run_dir / "mlflow_run_id"
    if not db.is_file() or not id_file.is_file():
        return False
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
    run_id = id_file.read_text().strip()
    try:
        uri = client.get_run(run_id).info.artifact_uri
    except MlflowException:
        return False
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        where = Path(unquote(urlparse(uri).path)).resolve()
        if not where.is_relative_to(run_dir.resolve()):
            log.warning(f"note: {run_dir}: MLflow artifacts live at {where}, outside the run directory; "
                        "report not attached")
            return False
    try:
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    except (MlflowException, OSError) as e:  # the report files are written; MLflow is a copy
        log.warning(f"warning: {run_dir}: could not attach the report to MLflow run {run_id}: {e}")
        return False
    return True


# ---- entry point -------------------------------------------------------------------------------

def default_output_dir(run_dirs: list[str | Path]) -> Path:
    """`<common parent of the runs>/report`."""
    parents = [str(Path(d).resolve().parent) for d in run_dirs]
    return Path(os.path.commonpath(parents)) / "report"


def build_report(runs: list[RunSummary], *, benchmark: str | None = None, n_examples: int = 4,
                 weights: bool = True) -> tuple[list[Block], dict[str, bytes], str]:
    """(blocks, images by file name, title): everything but the files."""
    labels = unique_names(runs)
    title = "Weighted MTP report: " + ", ".join(labels)
    images: dict[str, bytes] = {}
    blocks: list[Block] = [Heading(1, title),
                           Para(f"Generated {datetime.now():%Y-%m-%d %H:%M} from {len(runs)} run(s).")]
    blocks += runs_section(runs, labels)
    blocks += validation_section(runs, labels)
    blocks += weight_stats_section(runs, labels)
    blocks += grid_section(runs, labels, benchmark)
    blocks += evaluation_section(runs, labels, benchmark)
    blocks += curves_section(runs, labels, images)
    blocks += weights_section(runs, labels, images, n_examples, weights)
    return blocks, images, title


def write_report(run_dirs: list[str | Path], output_dir: str | Path | None = None, *, benchmark: str | None = None,
                 n_examples: int = 4, weights: bool = True) -> tuple[Path, Path]:
    """Write report.md (+ PNGs) and report.html into `output_dir` (default: `report/` beside the
    runs), attach them to every run's MLflow run, and return (md_path, html_path)."""
    if not run_dirs:
        raise WMTPError("wmtp report needs at least one run directory")
    runs = [collect_run(d) for d in run_dirs]  # every input checked before anything is written
    out = Path(output_dir) if output_dir is not None else default_output_dir(run_dirs)
    blocks, images, title = build_report(runs, benchmark=benchmark, n_examples=n_examples, weights=weights)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, png in images.items():
        (out / name).write_bytes(png)
        written.append(out / name)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(to_markdown(blocks))
    html_path.write_text(to_html(blocks, images, title))
    for run in runs:
        log_to_mlflow(run.run_dir, [md_path, html_path, *written])
    return md_path, html_path
