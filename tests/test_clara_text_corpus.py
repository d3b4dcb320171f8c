"""clara.text_corpus: ordinary prose for CLaRa's stages 1-2, split into held-out chunks, and
mixed into the embedded data without touching stage 3, the test split or the world-only cache key."""

from __future__ import annotations

import hashlib
import json

import pytest

from weighted_mtp.clara.data import read_stage
from weighted_mtp.clara.embedded import build_clara_data
from weighted_mtp.clara.text_corpus import mix_into, python_doc_paragraphs, text_examples
from weighted_mtp.errors import ConfigError
from weighted_mtp.world.world import build_world


def test_paragraphs_are_prose():
    paragraphs = python_doc_paragraphs()
    assert len(paragraphs) > 300 and len(set(paragraphs)) == len(paragraphs)
    for p in paragraphs:
        assert "\n" not in p and len(p.split()) >= 12 and "::=" not in p and ">>>" not in p
    assert sum(len(p.split()) for p in paragraphs) > 20_000


def test_examples_hold_out_chunks_and_copy_answers_from_the_gold_chunk():
    text = text_examples(300, seed=0, k=2, valid_docs=40)
    train, valid = text["train"], text["valid"]
    assert len(train.chunks) == 300 and len(valid.chunks) == 40
    assert not {c.text for c in train.chunks} & {c.text for c in valid.chunks}
    for split in (train, valid):
        texts = {c.text for c in split.chunks}
        paraphrases = [e for e in split.stage1 if e.data_type == "paraphrase"]
        assert [e.doc for e in paraphrases] == [c.text for c in split.chunks]
        assert all(e.target() == e.doc for e in paraphrases)  # reconstruction: the chunk itself
        for e in split.stage1:
            if e.data_type == "qa":
                assert all(a in e.doc for a in e.answers) and e.doc in texts
        for e in split.stage2:
            assert len(e.docs) == 2 and all(d in texts for d in e.docs)
            assert sum(e.answer in d for d in e.docs) == 1  # the distractor does not hold the answer
        assert len(split.stage2) > 0
    again = text_examples(300, seed=0, k=2, valid_docs=40)
    assert again["train"].stage2 == train.stage2  # seeded
    assert text_examples(300, seed=1, k=2, valid_docs=40)["valid"].chunks != valid.chunks
    with pytest.raises(ConfigError, match="valid_docs"):
        text_examples(10, seed=0, valid_docs=100_000)


def test_mix_into_adds_text_to_stages_1_2_of_train_and_valid_only():
    world = build_world(seed=0)
    base = build_clara_data(world, k=1, n_candidates=2, seed=0, train_docs=100)
    mixed = build_clara_data(world, k=1, n_candidates=2, seed=0, train_docs=100)
    mix_into(mixed, 100, seed=0, k=1)
    text = text_examples(100, seed=0, k=1)
    for split in ("train", "valid"):
        for stage in ("stage1", "stage2"):
            added = getattr(text[split], stage)
            assert sorted(map(repr, mixed[split][stage])) == sorted(map(repr, base[split][stage] + added))
        assert mixed[split]["stage3"] == base[split]["stage3"]
    assert mixed["test"] == base["test"]
    head = mixed["train"]["stage1"][:60]  # shuffled: a prefix holds both kinds
    world_docs = {e.doc for e in base["train"]["stage1"]}
    assert any(e.doc in world_docs for e in head) and any(e.doc not in world_docs for e in head)


def test_world_only_data_keeps_its_cache_key(tmp_path, monkeypatch):
    from weighted_mtp.clara import resources

    monkeypatch.setenv("WMTP_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(resources, "write_clara_data", lambda out, world, **kw: calls.append((out, kw)) or out)
    old = hashlib.sha256(json.dumps({"v": 1, "world_seed": 0, "train_docs": 96, "k": 1}).encode()).hexdigest()[:12]
    assert resources.embedded_clara_dir(0, 96, 1).name == f"clara-embedded-{old}"
    assert resources.embedded_clara_dir(0, 96, 1, text_docs=50).name != f"clara-embedded-{old}"
    assert calls[1][1]["text_docs"] == 50


def test_mixed_files_round_trip(tmp_path):
    from weighted_mtp.clara.embedded import write_clara_data

    out = write_clara_data(tmp_path / "d", build_world(seed=0), k=1, n_candidates=2, seed=0, train_docs=30,
                           text_docs=60)
    stage1 = read_stage(out / "stage1_train.jsonl", 1)
    stage2 = read_stage(out / "stage2_valid.jsonl", 2)
    assert sum(e.data_type == "paraphrase" and e.answers[0] == e.doc for e in stage1) == 60
    assert any(e.answer in e.docs[0] for e in stage2)
