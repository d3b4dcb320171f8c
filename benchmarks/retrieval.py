"""Batched BM25 search (``weighted_mtp.rag.retrievers.BM25Retriever``: one sparse matrix product per
batch of queries over bm25s's index) vs a naive per-query, per-passage Python BM25 with the same
Lucene scoring, on the embedded StepER world's corpus repeated to a larger size, in the same run.
Both must return the same top-k passages (checked); the last line is
``ratio_time=<ours/naive> speedup=<naive/ours>``.

    python benchmarks/retrieval.py [--copies 8] [--queries 300] [--k 4]
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import Counter

from weighted_mtp.rag.passages import Passage
from weighted_mtp.rag.retrievers import BM25Retriever
from weighted_mtp.world.world import build_world

_WORD = re.compile(r"\b\w\w+\b")


def naive_search(passages: list[Passage], queries: list[str], k: int, stopwords: set[str],
                 k1: float = 1.5, b: float = 0.75) -> list[list[str]]:
    docs = [[w for w in _WORD.findall(p.as_text().lower()) if w not in stopwords] for p in passages]
    df = Counter(w for d in docs for w in set(d))
    avgdl = sum(len(d) for d in docs) / len(docs)
    n = len(docs)
    tfs = [Counter(d) for d in docs]
    out = []
    for q in queries:
        terms = [w for w in _WORD.findall(q.lower()) if w not in stopwords]
        scores = []
        for i, (tf, d) in enumerate(zip(tfs, docs)):
            s = 0.0
            for w in terms:
                if tf[w]:
                    idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                    s += idf * tf[w] / (tf[w] + k1 * (1 - b + b * len(d) / avgdl))
            scores.append((-s, i))
        out.append([passages[i].pid for _, i in sorted(scores)[:k]])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()
    world = build_world(seed=0)
    passages = [Passage(f"{p.pid}-{c}", p.title, p.text) for c in range(args.copies) for p in world.corpus]
    queries = [q.question for q in world.questions["train"][: args.queries]]
    t = time.perf_counter()
    retriever = BM25Retriever.build(passages)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    ours = [[h.pid for h in row] for row in retriever.search(queries, args.k)]
    ours_s = time.perf_counter() - t
    import bm25s.stopwords as sw

    stop = set(getattr(sw, "STOPWORDS_EN", ()))
    t = time.perf_counter()
    naive = naive_search(passages, queries, args.k, stop)
    naive_s = time.perf_counter() - t
    agree = sum(set(a) == set(b) for a, b in zip(ours, naive)) / len(queries)
    print(f"corpus {len(passages)} passages, {len(queries)} queries, k={args.k}; index build {build_s:.2f} s")
    print(f"ours  {ours_s * 1e3:9.1f} ms  ({len(queries) / ours_s:,.0f} queries/s)")
    print(f"naive {naive_s * 1e3:9.1f} ms  ({len(queries) / naive_s:,.0f} queries/s)")
    print(f"same top-{args.k} set: {agree:.1%} of queries")
    print(f"ratio_time={ours_s / naive_s:.4f} speedup={naive_s / ours_s:.1f}")


if __name__ == "__main__":
    main()
