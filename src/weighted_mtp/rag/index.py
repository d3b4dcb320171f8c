"""`wmtp rag index` / `wmtp rag search`: build a retriever index from a JSONL corpus once, then
query it by hand to check that retrieval finds what a StepER or CLaRa run will need."""

from __future__ import annotations

import json
from pathlib import Path

from weighted_mtp.errors import ConfigError
from weighted_mtp.rag.passages import read_passages
from weighted_mtp.rag.retrievers import MANIFEST, RETRIEVERS, build_retriever, load_retriever

SHOWN_CHARS = 100


def build_index(corpus_path: str | Path, out_dir: str | Path, kind: str = "bm25",
                model_path: str | Path | None = None) -> Path:
    """Index every passage of the corpus into `out_dir` (replaced whole, never left half-written)."""
    passages = read_passages(corpus_path)
    return build_retriever(passages, kind, model_path=model_path).save(out_dir)


def cmd_rag_index(args) -> int:
    out = build_index(args.corpus, args.output, args.kind, getattr(args, "model", None))
    n = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["n_passages"]
    print(f"indexed {n} passages from {args.corpus} ({args.kind}) -> {out}")
    return 0


def cmd_rag_search(args) -> int:
    if args.k < 1:
        raise ConfigError(f"-k must be at least 1, got {args.k}")
    retriever = load_retriever(args.index)
    for query, hits in zip(args.query, retriever.search(args.query, args.k)):
        print(f"query: {query}")
        for rank, hit in enumerate(hits, start=1):
            text = " ".join(retriever.passage(hit.pid).as_text().split())[:SHOWN_CHARS]
            print(f"{rank:3d}  {hit.score:8.3f}  {hit.pid}  {text}")
    return 0


def add_rag_parser(sub) -> None:
    """Add `rag index` and `rag search` to the CLI's subparsers."""
    r = sub.add_parser("rag", help="retrieval indexes for StepER / CLaRa").add_subparsers(
        dest="rag_command", required=True)
    ri = r.add_parser("index", help="index a JSONL corpus ({\"id\", \"title\", \"text\"} per line)")
    ri.add_argument("corpus", type=Path)
    ri.add_argument("--kind", choices=list(RETRIEVERS), default="bm25")
    ri.add_argument("--output", type=Path, required=True, metavar="DIR")
    ri.add_argument("--model", type=Path, default=None, metavar="DIR",
                    help="dense only: a local sentence-transformers directory (default all-MiniLM-L6-v2)")
    ri.set_defaults(func=cmd_rag_index)
    rs = r.add_parser("search", help="print the top-k passages of an index for each query")
    rs.add_argument("index", type=Path, metavar="INDEX")
    rs.add_argument("query", nargs="+", metavar="QUERY")
    rs.add_argument("-k", type=int, default=5, help="hits per query (default 5)")
    rs.set_defaults(func=cmd_rag_search)
