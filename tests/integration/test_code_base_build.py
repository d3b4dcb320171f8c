"""The code-pretrained base, built end to end with a tiny recipe: deterministic (two fresh caches
give the same bytes), reused from the cache, pretraining lowers the loss, and no valid or test
problem of the embedded dataset is in its corpus."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from weighted_mtp.models import code_base
from weighted_mtp.models.code_base import CodeBaseRecipe, build_corpus, cache_key, ensure_code_base
from weighted_mtp.models.code_corpus import held_out
from weighted_mtp.models.micro import embedded_data_dir

TINY = CodeBaseRecipe(arch=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True),
                      vocab_size=512, steps=10, batch_size=4, seq_len=64, warmup_steps=2, learning_rate=1e-2,
                      extra_problem_seeds=(1,), extra_problems_per_seed=300, compile=False)


def test_build_is_deterministic_cached_and_learns(tmp_path, monkeypatch, micro_model_dir):
    monkeypatch.setenv("WMTP_CACHE", str(tmp_path / "a"))
    first = ensure_code_base(recipe=TINY, say=lambda *_: None)
    monkeypatch.setattr(code_base, "build_code_base", lambda *a, **k: pytest.fail("rebuilt a cached base"))
    assert ensure_code_base(recipe=TINY) == first  # a cache hit: nothing is built again
    monkeypatch.undo()
    monkeypatch.setenv("WMTP_CACHE", str(tmp_path / "b"))
    second = ensure_code_base(recipe=TINY, say=lambda *_: None)
    assert second != first and second.name == first.name  # same key, another cache
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((first / code_base.PRETRAINING_FILE).read_text())
    assert summary["last_loss"] < summary["first_loss"] - 0.3
    assert summary["problem_functions"] > 4000 and summary["stdlib_functions"] > 3000
    assert not list((tmp_path / "a" / "models").glob(".*tmp-*"))  # no half-built leftovers
    manifest = json.loads((embedded_data_dir(0, 2000) / "manifest.json").read_text())
    other = CodeBaseRecipe(**{**TINY.__dict__, "seed": 1})
    assert cache_key(other, manifest) != cache_key(TINY, manifest)  # the recipe is part of the key


def test_no_held_out_problem_is_in_the_corpus(micro_model_dir):
    data_dir = embedded_data_dir(0, 2000)
    corpus = build_corpus(data_dir, TINY)
    problems = "".join(corpus.problems)
    rows = [json.loads(line) for split in ("valid", "test")
            for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]
    assert len(rows) > 2000
    for row in rows:  # neither its specification nor any of its solutions, correct or not
        assert f"# {' '.join(row['instruction'].split())}\n" not in problems, row["task_id"]
        assert row["output"].strip() not in problems, row["task_id"]
    exclude = held_out(data_dir)
    assert not any(exclude.hides(None, [f]) for f in corpus.stdlib)
    train_rows = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()]
    assert f"# {' '.join(train_rows[0]['instruction'].split())}\n{train_rows[0]['output']}" in problems


def test_the_model_name_resolves_through_the_config_dataset(monkeypatch, tmp_path):
    from weighted_mtp.config import load_config
    from weighted_mtp.models import load

    seen = {}
    monkeypatch.setattr(load, "ensure_code_base", lambda data_seed, n_problems: seen.update(
        seed=data_seed, n=n_problems) or tmp_path)
    cfg = load_config(REPO / "configs" / "baseline" / "baseline.yaml", ["dataset.embedded.seed=3"])
    assert load.resolve_model_path("embedded:micro-code", cfg) == tmp_path
    assert seen == {"seed": 3, "n": 2000}
