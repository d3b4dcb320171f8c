"""The embedded default model is built locally and deterministically: two fresh caches give the
same bytes, and it loads through the same code path as any HF directory."""

import os

import torch
from safetensors.torch import load_file

from weighted_mtp.models.micro import ensure_micro_model
from weighted_mtp.models.mtp import MTPModel


def test_micro_model_is_deterministic_and_small(tmp_path, monkeypatch, micro_model_dir):
    monkeypatch.setenv("WMTP_CACHE", str(tmp_path / "fresh"))
    rebuilt = ensure_micro_model()
    assert rebuilt != micro_model_dir and rebuilt.is_dir()
    assert (rebuilt / "tokenizer.json").read_text() == (micro_model_dir / "tokenizer.json").read_text()
    a, b = load_file(rebuilt / "model.safetensors"), load_file(micro_model_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = MTPModel.from_pretrained(rebuilt, n_future_tokens=4)
    n = sum(p.numel() for p in model.lm.parameters())
    assert 1e6 < n < 2e7, n
    assert not list((tmp_path / "fresh" / "models").glob("*.tmp-*"))  # no half-built leftovers


def test_micro_tokenizer_round_trips_code_and_adds_bos(micro_model_dir):
    from weighted_mtp.models.load import load_tokenizer

    tok = load_tokenizer(micro_model_dir)
    code = "def f(xs):\n    return [x * 2 for x in xs if x > 3]  # ü\n"
    ids = tok(code)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == code
    assert tok.eos_token_id is not None and tok.pad_token_id not in (None, tok.eos_token_id)
