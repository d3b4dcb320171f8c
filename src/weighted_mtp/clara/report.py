"""Scores and the markdown report of a CLaRa evaluation on one PDF: the answer metrics of the
paper (EM, F1, Cover-EM) per scenario (no context, retrieval over the PDF's chunks, the gold
chunk), keyword overlap for answers that are right in other words, Recall@k of the retriever,
and how much of a chunk survives compression. The report takes a plain dict, so any
orchestration (CLI, notebook, a later model) can fill it."""

from __future__ import annotations

from typing import Any, Sequence

from weighted_mtp.clara.pdf import Chunk
from weighted_mtp.clara.qa_pairs import QAPair, content_words
from weighted_mtp.rag.qa_metrics import accuracy, aggregate, exact_match, f1_score, normalize_answer, recall_at_k


def keyword_overlap(prediction: str, keywords: Sequence[str]) -> float:
    """Share of the keywords the prediction contains, each compared as normalised whole words
    (so "Mirs" counts in "Dolan Mirs." but not in "Mirsky")."""
    if isinstance(keywords, str):
        raise TypeError("keywords must be a sequence of strings, not one string")
    if not keywords:
        raise ValueError("no keywords to look for")
    pred = f" {normalize_answer(prediction)} "
    found = [bool(n) and f" {n} " in pred for n in map(normalize_answer, keywords)]  # "" (e.g. "a") never counts
    return sum(found) / len(keywords)


def _keywords(pair: QAPair) -> Sequence[str]:
    return pair.keywords or content_words(pair.answer) or (pair.answer,)


def scenario_metrics(predictions: Sequence[str], pairs: Sequence[QAPair],
                     retrieved: Sequence[Sequence[str]] | None = None,
                     gold_chunk_ids: Sequence[str | None] | None = None) -> dict[str, float]:
    """Means over the pairs of EM, F1, Cover-EM (gold contained in the prediction, `accuracy`)
    and keyword overlap; with `retrieved` (chunk ids per pair, best first, k each) also
    Recall@1 and Recall@k, over the pairs that have a gold chunk (default: each pair's chunk_id).
    Fractions in [0, 1]; "n" is the number of pairs."""
    if len(predictions) != len(pairs):
        raise ValueError(f"{len(predictions)} predictions for {len(pairs)} QA pairs")
    rows = [{"em": exact_match(p, [q.answer]), "f1": f1_score(p, [q.answer]), "cover_em": accuracy(p, [q.answer]),
             "keyword_overlap": keyword_overlap(p, _keywords(q))} for p, q in zip(predictions, pairs)]
    out: dict[str, float] = {**aggregate(rows), "n": len(pairs)}
    if retrieved is None:
        return out
    if len(retrieved) != len(pairs):
        raise ValueError(f"{len(retrieved)} retrieval lists for {len(pairs)} QA pairs")
    gold = [q.chunk_id for q in pairs] if gold_chunk_ids is None else list(gold_chunk_ids)
    if len(gold) != len(pairs):
        raise ValueError(f"{len(gold)} gold chunk ids for {len(pairs)} QA pairs")
    ks = {len(r) for r in retrieved}
    if len(ks) != 1 or 0 in ks:
        raise ValueError(f"every pair must have the same number (>= 1) of retrieved chunks, got {sorted(ks)}")
    k = ks.pop()
    scored = [(list(r), g) for r, g in zip(retrieved, gold) if g is not None]
    if scored:
        out["recall@1"] = sum(recall_at_k(r, [g], 1) for r, g in scored) / len(scored)
        if k > 1:
            out[f"recall@{k}"] = sum(recall_at_k(r, [g], k) for r, g in scored) / len(scored)
    return out


def compression_metrics(reconstructions: Sequence[str], chunks: Sequence[Chunk | str],
                        raw_tokens: float | None = None, memory_tokens: int | None = None) -> dict[str, float]:
    """How much of each chunk its compressed memory gives back: the mean token F1 (SQuAD
    normalisation) between each reconstruction and its chunk's text. With token counts (mean
    raw tokens of a chunk, memory tokens per chunk), also the compression ratio raw/memory."""
    if len(reconstructions) != len(chunks):
        raise ValueError(f"{len(reconstructions)} reconstructions for {len(chunks)} chunks")
    if not chunks:
        raise ValueError("no chunks to score")
    texts = [c.text if isinstance(c, Chunk) else c for c in chunks]
    f1 = sum(f1_score(r, [t]) for r, t in zip(reconstructions, texts)) / len(texts)
    out: dict[str, float] = {"reconstruction_f1": f1, "n": len(texts)}
    if raw_tokens is not None:
        out["raw_tokens"] = raw_tokens
    if memory_tokens is not None:
        out["memory_tokens"] = memory_tokens
    if raw_tokens is not None and memory_tokens:
        out["compression_ratio"] = raw_tokens / memory_tokens
    return out


# ------------------------------------------------------------------------------------ markdown

METRIC_ORDER = ("em", "f1", "cover_em", "keyword_overlap", "recall@1")
METRIC_NAMES = {"em": "EM", "f1": "F1", "cover_em": "Cover-EM", "keyword_overlap": "Keyword overlap",
                "recall@1": "Recall@1", "n": "n", "reconstruction_f1": "Reconstruction token F1",
                "raw_tokens": "Raw tokens per chunk", "memory_tokens": "Memory tokens per chunk",
                "compression_ratio": "Compression ratio", "model": "Measured with"}
_COUNTS = {"n", "raw_tokens", "memory_tokens"}


def _name(key: str) -> str:
    return METRIC_NAMES.get(key) or (f"Recall@{key[7:]}" if key.startswith("recall@") else key)


def _cell(value: Any) -> str:
    text = "–" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _value(key: str, value: Any) -> str:
    """Fractions as percentages, counts as numbers, the ratio with a ×."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _cell(value)
    if key == "compression_ratio":
        return f"{value:.1f}×"
    if key in _COUNTS:
        return f"{value:g}" if isinstance(value, int) or float(value).is_integer() else f"{value:.1f}"
    return f"{100 * value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def _example_columns(examples: Sequence[dict]) -> list[str]:
    cols: dict[str, None] = {}
    for ex in examples:
        for key, value in ex.items():
            if isinstance(value, dict):
                cols.update((f"{key}.{sub}", None) for sub in value)
            else:
                cols[key] = None
    return list(cols)


def _example_value(example: dict, column: str) -> Any:
    if column in example:
        return example[column]
    head, _, sub = column.partition(".")
    return example.get(head, {}).get(sub) if isinstance(example.get(head), dict) else None


def render_markdown(summary: dict) -> str:
    """The report of one evaluation. `summary` = {"pdf": {path, pages, chunks, ...}, "model": str,
    "scenarios": {name: scenario_metrics(...)}, "compression": compression_metrics(...) (optional),
    "examples": [{"question", "answer", "predictions": {scenario: text}, ...}] (optional; the
    first five are shown), "default_model" and "seconds" (optional: how the model was found or
    built, and how long each part took)}."""
    for key in ("pdf", "model", "scenarios"):
        if key not in summary:
            raise ValueError(f"summary has no '{key}' (it needs pdf, model and scenarios)")
    pdf, scenarios = summary["pdf"], summary["scenarios"]
    lines = [f"# CLaRa evaluation: {_cell(pdf.get('path', 'PDF'))}", "", "## Document", ""]
    lines += [f"- {key}: {_cell(value)}" for key, value in pdf.items()]
    lines += ["", "## Model", "", f"- {_cell(summary['model'])}", "", "## Scenarios", ""]
    if scenarios:
        keys: dict[str, None] = {k: None for k in METRIC_ORDER if any(k in m for m in scenarios.values())}
        keys.update((k, None) for m in scenarios.values() for k in m if k != "n")
        keys.update({"n": None} if any("n" in m for m in scenarios.values()) else {})
        lines += ["Metrics in % (n = QA pairs); – where a scenario has no such metric.", ""]
        lines += _table(["Scenario", *map(_name, keys)],
                        [[_cell(name), *(_value(k, m[k]) if k in m else "–" for k in keys)]
                         for name, m in scenarios.items()])
    else:
        lines.append("No scenario was run.")
    compression = summary.get("compression")
    if compression:
        lines += ["", "## Compression quality", ""]
        lines += _table(["Measure", "Value"], [[_name(k), _value(k, v)] for k, v in compression.items()])
    run = {**({f"default model: {k}": v for k, v in summary["default_model"].items()}
              if summary.get("default_model") else {}),
           **{f"seconds: {k}": v for k, v in (summary.get("seconds") or {}).items()}}
    if run:
        lines += ["", "## Run", ""] + [f"- {key}: {_cell(value)}" for key, value in run.items()]
    examples = list(summary.get("examples") or [])[:5]
    if examples:
        cols = _example_columns(examples)
        lines += ["", "## Examples", ""]
        lines += _table([_cell(c) for c in cols], [[_cell(_example_value(ex, c)) for c in cols] for ex in examples])
    return "\n".join(lines) + "\n"
