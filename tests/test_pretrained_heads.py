"""MTP heads trained beside a base: warm-up trains the heads only, and they round-trip into a
policy of the same K (any other K keeps copied heads)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.models.pretrained_heads import HEADS_FILE, attach_pretrained_heads, save_pretrained_heads, warm_up_heads


def _lm(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1))


def test_warm_up_trains_heads_only_and_lowers_their_loss():
    lm = _lm()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    # A sequence the heads can learn: token t+k is a function of token t.
    gen = torch.Generator().manual_seed(0)

    def batch():
        start = torch.randint(0, 32, (8, 1), generator=gen)
        return (start + torch.arange(24)) % 32

    model, losses = warm_up_heads(lm, batch, n_future_tokens=3, steps=60, learning_rate=2e-2, bf16=False)
    assert all(torch.equal(v, before[k]) for k, v in lm.state_dict().items())  # the LM is frozen
    assert all(p.requires_grad for p in lm.parameters())  # and trainable again afterwards
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5
    assert not torch.equal(model.extra_heads[0].mlp.down_proj.weight, lm.model.layers[-1].mlp.down_proj.weight)


def test_saved_heads_attach_to_a_policy_of_the_same_k_only(tmp_path):
    lm = _lm()
    trained = MTPModel(lm, 3)
    with torch.no_grad():
        for p in trained.extra_heads.parameters():
            p.add_(torch.randn_like(p))
    lm.save_pretrained(tmp_path)
    save_pretrained_heads(trained, tmp_path)
    policy = MTPModel.from_pretrained(tmp_path, n_future_tokens=3)
    assert attach_pretrained_heads(policy, tmp_path)
    for a, b in zip(policy.extra_heads.parameters(), trained.extra_heads.parameters()):
        assert torch.equal(a, b)
    other = MTPModel.from_pretrained(tmp_path, n_future_tokens=2)
    assert not attach_pretrained_heads(other, tmp_path)
    assert not attach_pretrained_heads(MTPModel.from_pretrained(tmp_path, n_future_tokens=3), tmp_path / "nothing")
    assert json.loads((tmp_path / "pretrained_mtp_heads.json").read_text())["n_future_tokens"] == 3


def test_a_damaged_heads_file_names_itself(tmp_path):
    lm = _lm()
    lm.save_pretrained(tmp_path)
    save_pretrained_heads(MTPModel(lm, 3), tmp_path)
    (tmp_path / HEADS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(WMTPError, match=HEADS_FILE):
        attach_pretrained_heads(MTPModel.from_pretrained(tmp_path, n_future_tokens=3), tmp_path)
