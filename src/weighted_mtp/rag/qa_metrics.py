"""Answer and retrieval metrics of multi-hop QA papers (StepER, IRCoT): EM and F1 as the
official SQuAD v1.1 script computes them (with HotpotQA's yes/no rule), Acc (gold contained in
the prediction) and recall@k of gold passage ids. Reported numbers are only comparable across
papers if these follow the reference scripts character for character, so they do."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Collection, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# HotpotQA's evaluate script: these answers get no partial credit, or "no" would share F1 with
# "no, it was not" and a yes/no question would reward answering the wrong polarity at length.
_EXACT_ONLY = frozenset({"yes", "no", "noanswer"})


def normalize_answer(text: str) -> str:
    """SQuAD v1.1: lower case, drop punctuation (so "3.5" becomes "35"), drop the articles
    a/an/the, collapse whitespace; applied in that order."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _golds(golds: Sequence[str]) -> Sequence[str]:
    if isinstance(golds, str):
        raise TypeError("golds must be a sequence of answers, not one string (wrap it: [answer])")
    if not golds:
        raise ValueError("no gold answers to score against")
    return golds


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold."""
    pred = normalize_answer(prediction)
    return max(float(pred == normalize_answer(g)) for g in _golds(golds))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _EXACT_ONLY or ref in _EXACT_ONLY) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:  # SQuAD v1.1: this includes both sides empty
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Token-level F1 of the normalised strings, best over the golds."""
    return max(_f1(prediction, g) for g in _golds(golds))


def accuracy(prediction: str, golds: Sequence[str]) -> float:
    """"Acc" of StepER / Adaptive-RAG: 1.0 if a normalised gold is a substring of the normalised
    prediction. Plain substring, as in those scripts (so gold "1" is found in "1990"). A gold that
    normalises to "" would be found in every prediction, so it never counts."""
    pred = normalize_answer(prediction)
    return max(float(bool(g) and g in pred) for g in map(normalize_answer, _golds(golds)))


def recall_at_k(retrieved: Sequence[str], gold: Collection[str], k: int | None = None) -> float:
    """Fraction of the gold passage ids found among the first k retrieved ids (all if k is None)."""
    if not gold:
        raise ValueError("recall is undefined without gold ids")
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0 or None, got {k}")
    gold_set = set(gold)
    top = set(retrieved if k is None else retrieved[:k])
    return len(top & gold_set) / len(gold_set)


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric means over examples. Every row must carry the same metrics: a mean over a
    subset of the examples would be reported as if it covered all of them."""
    if not rows:
        raise ValueError("no rows to aggregate")
    keys = list(rows[0])
    for i, row in enumerate(rows):
        if set(row) != set(keys):
            raise ValueError(f"row {i} has metrics {sorted(row)}, row 0 has {sorted(keys)}")
    return {key: sum(float(row[key]) for row in rows) / len(rows) for key in keys}
