"""MTPModel on tiny random Llama, Qwen2, Mistral and GPT-2 models: head 1 is the plain LM, extra
heads start as copies of the last block and read the trunk output, gradients flow, and the
export round-trips exactly and stays a plain HF model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.hf_layout import find_layout
from weighted_mtp.models.mtp import HEADS_FILE, MTP_CONFIG_FILE, MTPModel

V = 61
ARCHS = ["llama", "qwen2", "mistral", "gpt2"]


def make_lm(arch: str, seed: int = 0):
    import transformers as tf

    common = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "llama":  # tied embeddings, like the embedded micro model
        cfg, cls = tf.LlamaConfig(**common, tie_word_embeddings=True), tf.LlamaForCausalLM
    elif arch == "qwen2":  # q/k/v biases
        cfg, cls = tf.Qwen2Config(**common), tf.Qwen2ForCausalLM
    elif arch == "mistral":  # a sliding window shorter than the batch, so the heads need the right mask
        cfg, cls = tf.MistralConfig(**common, sliding_window=4), tf.MistralForCausalLM
    elif arch == "gpt2":  # learned positions, LayerNorm, blocks called with positional arguments
        cfg = tf.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        cls = tf.GPT2LMHeadModel
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    return cls(cfg).eval()


def padded_batch(seed: int = 0):
    """Two rows, the second right-padded (pad id 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return ids, mask


def all_logits(model: MTPModel, ids, mask):
    out = model(ids, mask)
    return [model.head_logits(h) for h in out.head_hidden]


def perturb(module: torch.nn.Module, seed: int = 1, scale: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


@pytest.mark.parametrize("arch", ARCHS)
def test_head_one_is_the_lm_and_extra_heads_start_as_copies(arch):
    lm = make_lm(arch)
    model = MTPModel(lm, 3).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        plain = lm(input_ids=ids, attention_mask=mask).logits
        heads = all_logits(model, ids, mask)
    assert len(heads) == 3
    assert all(h.shape == (2, 10, V) for h in heads)
    torch.testing.assert_close(heads[0], plain, rtol=1e-5, atol=1e-6)
    for k in (1, 2):
        torch.testing.assert_close(heads[k], heads[0], rtol=1e-5, atol=1e-6)
    last = find_layout(lm).layers[-1]
    for head in model.extra_heads:
        assert head is not last
        assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), last.state_dict().values()))
        assert all(p.data_ptr() != q.data_ptr() for p, q in zip(head.parameters(), last.parameters()))


@pytest.mark.parametrize("arch", ARCHS)
def test_perturbed_extra_head_changes_only_itself(arch):
    lm = make_lm(arch)
    model = MTPModel(lm, 3).eval()
    ids, mask = padded_batch(seed=1)
    with torch.no_grad():
        before = all_logits(model, ids, mask)
        perturb(model.extra_heads[0])
        after = all_logits(model, ids, mask)
        plain = lm(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    assert (after[1] - before[1])[valid].abs().max() > 1e-2  # head 2 moved
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)  # head 1 untouched
    torch.testing.assert_close(after[0], plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after[2], after[0], rtol=1e-5, atol=1e-6)  # head 3 still a copy


@pytest.mark.parametrize("arch", ARCHS)
def test_extra_head_loss_reaches_trunk_not_head_one(arch):
    lm = make_lm(arch).train()
    model = MTPModel(lm, 3).train()
    ids, mask = padded_batch(seed=2)
    out = model(ids, mask)
    assert out.trunk_hidden.shape == (2, 10, model.hidden_size)
    logits = model.head_logits(out.head_hidden[1])[:, :-2]  # head 2 predicts t+2
    labels = ids[:, 2:].masked_fill(mask[:, 2:] == 0, -100)
    F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100).backward()

    emb = lm.get_input_embeddings().weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    first_block = find_layout(lm).layers[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first_block.parameters() if p.dim() > 1)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.extra_heads[0].parameters())
    # Heads are parallel: neither head 1's block nor head 3 takes part in head 2's loss.
    for module in (find_layout(lm).layers[-1], model.extra_heads[1]):
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_is_exact_and_stays_plain_hf(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    lm = make_lm(arch)
    model = MTPModel(lm, 3).eval()
    perturb(model.extra_heads[0], seed=3, scale=0.1)
    perturb(model.extra_heads[1], seed=4, scale=0.1)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / MTP_CONFIG_FILE).read_text())["n_future_tokens"] == 3
    assert all(k.startswith("extra_heads.") for k in load_file(tmp_path / HEADS_FILE))

    loaded = MTPModel.from_pretrained(tmp_path).eval()
    assert loaded.n_future_tokens == 3
    want, got = dict(model.named_parameters()), dict(loaded.named_parameters())
    assert want.keys() == got.keys()
    for name in want:
        assert got[name].dtype == torch.float32
        assert torch.equal(got[name], want[name]), name
    ids, mask = padded_batch(seed=5)
    with torch.no_grad():
        for a, b in zip(all_logits(model, ids, mask), all_logits(loaded, ids, mask)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = torch.randint(3, V, (2, 5), generator=torch.Generator().manual_seed(6))
    kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        expected = lm.generate(prompt, **kw)
        generated = plain.generate(prompt, **kw)
    assert generated.shape[1] > prompt.shape[1]
    assert torch.equal(generated, expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_hf_dir_gets_heads_copied_from_last_block(arch, tmp_path):
    lm = make_lm(arch)
    lm.save_pretrained(tmp_path)
    model = MTPModel.from_pretrained(tmp_path, n_future_tokens=3)
    assert model.n_future_tokens == 3 and len(model.extra_heads) == 2
    last = find_layout(model.lm).layers[-1].state_dict()
    for head in model.extra_heads:
        sd = head.state_dict()
        assert sd.keys() == last.keys()
        assert all(torch.equal(sd[k], last[k]) for k in sd)
    assert MTPModel.from_pretrained(tmp_path).n_future_tokens == 1


def test_k_mismatch_with_export_raises(tmp_path):
    MTPModel(make_lm("llama"), 3).save_pretrained(tmp_path)
    with pytest.raises(WMTPError, match="has 3 MTP heads"):
        MTPModel.from_pretrained(tmp_path, n_future_tokens=2)
    assert MTPModel.from_pretrained(tmp_path, n_future_tokens=3).n_future_tokens == 3


def test_k1_export_has_no_heads_file(tmp_path):
    model = MTPModel(make_lm("gpt2"), 1)
    assert len(model.extra_heads) == 0
    model.save_pretrained(tmp_path)
    assert not (tmp_path / HEADS_FILE).exists()
    assert MTPModel.from_pretrained(tmp_path).n_future_tokens == 1
    with pytest.raises(WMTPError):
        MTPModel(make_lm("gpt2"), 0)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(WMTPError, match="no config.json"):
        MTPModel.from_pretrained(tmp_path)


@pytest.fixture()
def export(tmp_path):
    MTPModel(make_lm("llama"), 3).save_pretrained(tmp_path)
    return tmp_path


def test_missing_head_key_raises(export):
    state = load_file(export / HEADS_FILE)
    del state["extra_heads.1.mlp.up_proj.weight"]
    save_file(state, export / HEADS_FILE)
    with pytest.raises(WMTPError, match=r"mtp_heads\.safetensors.*1\.mlp\.up_proj\.weight"):
        MTPModel.from_pretrained(export)


def test_unexpected_head_key_raises(export):
    state = load_file(export / HEADS_FILE)
    state["extra_heads.2.mlp.up_proj.weight"] = state["extra_heads.1.mlp.up_proj.weight"].clone()
    save_file(state, export / HEADS_FILE)
    with pytest.raises(WMTPError, match=r"mtp_heads\.safetensors.*unexpected"):
        MTPModel.from_pretrained(export)


def test_wrong_shape_head_tensor_raises(export):
    state = load_file(export / HEADS_FILE)
    state["extra_heads.0.mlp.gate_proj.weight"] = torch.zeros(3, 3)
    save_file(state, export / HEADS_FILE)
    with pytest.raises(WMTPError, match=r"mtp_heads\.safetensors"):
        MTPModel.from_pretrained(export)


def test_corrupt_heads_file_raises(export):
    (export / HEADS_FILE).write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(WMTPError, match=r"mtp_heads\.safetensors"):
        MTPModel.from_pretrained(export)


def test_missing_heads_file_raises(export):
    (export / HEADS_FILE).unlink()
    with pytest.raises(WMTPError, match=r"mtp_heads\.safetensors"):
        MTPModel.from_pretrained(export)


@pytest.mark.parametrize("export_heads", [True, False])
def test_bf16_load(tmp_path, export_heads):
    lm = make_lm("qwen2")
    if export_heads:
        MTPModel(lm, 3).save_pretrained(tmp_path)
    else:
        lm.save_pretrained(tmp_path)
    model = MTPModel.from_pretrained(tmp_path, n_future_tokens=3, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids, mask = padded_batch()
    with torch.no_grad():
        out = model(ids, mask)
    assert len(out.head_hidden) == 3 and all(h.dtype == torch.bfloat16 for h in out.head_hidden)


def test_logit_softcapping_models_are_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    from weighted_mtp.errors import WMTPError as Err

    lm = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=64, vocab_size=50))
    lm.config.final_logit_softcapping = 30.0
    with pytest.raises(Err, match="final_logit_softcapping"):
        MTPModel(lm, 2)
