"""The report's figures, as PNG bytes: training curves with the arms overlaid, one histogram of
token weights per weighted arm, and heat maps of the weights over example solutions.

Figures are built on `matplotlib.figure.Figure` directly, never pyplot, so nothing touches the
global backend or pyplot's figure registry (the Agg canvas renders them; no display is needed)."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING

import numpy as np

from weighted_mtp.report.token_weights import WeightedExample

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn (`wmtp` loads this module for every command)
    from matplotlib.figure import Figure

MONO = "DejaVu Sans Mono"  # ships with matplotlib; every glyph advances 0.6021 em
MONO_ADVANCE = 0.6021
PROMPT_FACE, PROMPT_TEXT = "#e4e4e4", "#8a8a8a"
WEIGHT_CMAP = "YlOrRd"


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ---- training curves ---------------------------------------------------------------------------

History = dict[str, list[tuple[int, float]]]


def _head_keys(histories: dict[str, History]) -> list[str]:
    keys = {k for h in histories.values() for k in h if re.fullmatch(r"val/ce_head\d+", k)}
    return sorted(keys, key=lambda k: int(k.rsplit("head", 1)[1]))


def curve_figure(panels: dict[str, dict[str, list[tuple[int, float]]]], title: str) -> Figure:
    """One panel per metric, one line per arm (markers, so a run validated once still shows)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n = len(panels)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig = Figure(figsize=(6 * cols, 3.6 * rows), layout="constrained")
    fig.suptitle(title)
    for i, (metric, series) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for arm, points in series.items():
            pts = [(s, v) for s, v in points if np.isfinite(v)]
            if pts:
                steps, values = zip(*pts)
                ax.plot(steps, values, marker="o", markersize=3, label=arm)
        ax.set_title(metric)
        ax.set_xlabel("step")
        steps_seen = {s for points in series.values() for s, _ in points}
        if len(steps_seen) == 1:  # one validation: one tick, not a fractional axis around it
            ax.set_xticks(sorted(steps_seen))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    return fig


def training_curves(histories: dict[str, History]) -> dict[str, bytes]:
    """{family: PNG}: "loss" (train/loss, val/loss) and "val_ce_heads" (val/ce_head1..K), each
    with every arm overlaid; a family no arm logged is left out."""
    families = {"loss": (["train/loss", "val/loss"],
                         "loss (train/loss is each arm's objective; val/loss is unweighted CE)"),
                "val_ce_heads": (_head_keys(histories), "validation CE per MTP head (unweighted)")}
    out = {}
    for family, (keys, title) in families.items():
        panels = {k: {arm: h[k] for arm, h in histories.items() if k in h} for k in keys}
        panels = {k: v for k, v in panels.items() if v}
        if panels:
            out[family] = to_png(curve_figure(panels, title))
    return out


# ---- weight histogram --------------------------------------------------------------------------

def weight_histogram(weights: np.ndarray, title: str, bins: int = 50) -> bytes:
    """Distribution of target-token weights; log counts, because the interesting part of a
    weighting is often a thin tail (a few tokens with large weight, a pile-up at a clip bound)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    w = np.asarray(weights, dtype=np.float64)
    w = w[np.isfinite(w)]
    if w.size:
        ax.hist(w, bins=bins, log=True, color="#c0392b", alpha=0.85)
        ax.axvline(w.mean(), color="black", linestyle="--", linewidth=1, label=f"mean {w.mean():.3g}")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no target tokens", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel("token weight")
    ax.set_ylabel("tokens (log scale)")
    return to_png(fig)


# ---- token heat map ----------------------------------------------------------------------------

def _segments(token: str) -> list[tuple[str, bool]]:
    """[(text to draw, whether a line break follows)] for one token. A newline ends its row
    (drawn as ↵) and what follows it in the token (indentation) starts the next row; tabs are
    arrows; a token that decodes to nothing still gets a cell so its weight is visible."""
    parts = token.replace("\r", "").replace("\t", "→").split("\n")
    segments = [(part + "↵", True) for part in parts[:-1]]
    if parts[-1] or not segments:
        segments.append((parts[-1] or "∅", False))
    return segments


def layout_tokens(example: WeightedExample, width: int, prompt_tail: int | None) -> list[tuple[int, int, str, int]]:
    """(row, column, text, token index) per drawn cell, wrapped at `width` characters. Only the
    last `prompt_tail` prompt tokens are kept (the template repeats on every row and carries no
    loss), after a "…" cell with index -1."""
    first_target = next((j for j, t in enumerate(example.is_target) if t), len(example.tokens))
    start = 0 if prompt_tail is None else max(0, first_target - prompt_tail)
    cells, row, col = [], 0, 0
    if start > 0:
        cells.append((0, 0, "…", -1))
        col = 2
    for j in range(start, len(example.tokens)):
        for text, breaks in _segments(example.tokens[j]):
            text = text[:width]
            if col + len(text) > width and col > 0:
                row, col = row + 1, 0
            cells.append((row, col, text, j))
            col += len(text)
            if breaks:
                row, col = row + 1, 0
    return cells


def token_heatmap(example: WeightedExample, title: str, *, vmin: float | None = None, vmax: float | None = None,
                  width: int = 100, prompt_tail: int | None = 24, fontsize: float = 10.0) -> bytes:
    """The solution as text, each target token on a background coloured by its weight (one
    colour scale per arm when vmin/vmax are shared), prompt tokens grey. A monospace font makes
    layout arithmetic exact: one data unit on x is one character."""
    from matplotlib import cm, colormaps, colors
    from matplotlib.collections import PatchCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    cells = layout_tokens(example, width, prompt_tail)
    targets = [w for w, t in zip(example.weights, example.is_target) if t]
    lo = vmin if vmin is not None else min(targets, default=0.0)
    hi = vmax if vmax is not None else max(targets, default=1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    norm, cmap = colors.Normalize(lo, hi), colormaps[WEIGHT_CMAP]
    n_rows = (cells[-1][0] + 1) if cells else 1
    char_in, row_in = fontsize * MONO_ADVANCE / 72, fontsize * 1.55 / 72
    text_w, text_h = width * char_in, n_rows * row_in
    margin, top, bottom = 0.3, 0.45, 0.95
    fig_w, fig_h = text_w + 2 * margin, text_h + top + bottom
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((margin / fig_w, bottom / fig_h, text_w / fig_w, text_h / fig_h))
    ax.set_xlim(0, width)
    ax.set_ylim(n_rows, 0)
    ax.axis("off")
    fig.text(0.5, 1 - 0.22 / fig_h, title, ha="center", va="center", fontsize=11)
    rects, faces = [], []
    for row, col, text, j in cells:
        target = j >= 0 and example.is_target[j]
        face = cmap(norm(example.weights[j])) if target else colors.to_rgba(PROMPT_FACE)
        rects.append(Rectangle((col, row + 0.05), len(text), 0.9))
        faces.append(face)
        r, g, b, _ = face
        ink = (PROMPT_TEXT if not target else "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
        ax.text(col, row + 0.5, text, ha="left", va="center", family=MONO, fontsize=fontsize, color=ink)
    ax.add_collection(PatchCollection(rects, facecolors=faces, edgecolors="white", linewidths=0.3))
    cax = fig.add_axes((0.25, 0.5 / fig_h, 0.5, 0.14 / fig_h))
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal")
    bar.set_label("token weight (grey: prompt, no loss)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return to_png(fig)
