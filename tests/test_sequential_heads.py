"""Sequential (DeepSeek-V3-style) MTP heads: shapes on four architectures, a plain per-depth
reference forward, causality (depth k at t sees tokens up to t+k and no further), loss and
gradient equality of the fused loss with the naive one (head scales included), exports that
round-trip exactly (with LoRA too), and self-speculative decoding whose drafts equal the ones
a full uncached forward gives."""

from __future__ import annotations

import json

import pytest
import torch
from test_mtp_model import ARCHS, V, make_lm, padded_batch, perturb

from weighted_mtp.errors import WMTPError
from weighted_mtp.eval.speculative import greedy_decode, self_speculative_greedy
from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
from weighted_mtp.losses.reference import naive_mtp_cross_entropy
from weighted_mtp.models.mtp import HEADS_FILE, MTP_CONFIG_FILE, MTPModel
from weighted_mtp.models.sequential_heads import SequentialHead, shifted


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and on a busy machine much faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sequential(arch: str, k: int = 3, seed: int = 0) -> MTPModel:
    model = MTPModel(make_lm(arch, seed), k, head_type="sequential").eval()
    perturb(model.extra_heads, seed=seed + 1, scale=0.05)  # heads that use the token embeddings
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_head_one(arch):
    model = sequential(arch)
    ids, mask = padded_batch()
    with torch.no_grad():
        out = model(ids, mask)
        plain = model.lm(input_ids=ids, attention_mask=mask).logits
    assert len(out.head_hidden) == 3 and all(h.shape == (2, 10, 32) for h in out.head_hidden)
    torch.testing.assert_close(model.head_logits(out.head_hidden[0]), plain, rtol=1e-5, atol=1e-6)
    assert all(isinstance(h, SequentialHead) for h in model.extra_heads)
    names = {n.split(".")[1] for n, _ in model.extra_heads.named_parameters()}
    assert {"enorm", "hnorm", "eh_proj", "mtp_block", "post_norm"} == names  # transformers' MtpLayer names


def test_untrained_head_ignores_the_token_and_repeats_the_last_block():
    """eh_proj = [0 | I]: an untrained head is the last block on head 1's (re-normed) state."""
    model = MTPModel(make_lm("llama"), 2, head_type="sequential").eval()
    head = model.extra_heads[0]
    d = 32
    assert torch.equal(head.eh_proj.weight[:, :d], torch.zeros(d, d))
    assert torch.equal(head.eh_proj.weight[:, d:], torch.eye(d))
    ids, mask = padded_batch()
    other = ids.clone()
    other[:, 5:] = (other[:, 5:] + 1) % V
    with torch.no_grad():
        a, b = model(ids, mask).head_hidden[1], model(other, mask).head_hidden[1]
    # Position 3 sees tokens 0..3 through head 1 and token 4 through the embedding: unchanged.
    torch.testing.assert_close(a[:, :4], b[:, :4])


def reference_depths(model: MTPModel, ids: torch.Tensor) -> list[torch.Tensor]:
    """Plainly, for one unpadded Llama row: depth k = post_norm(block(eh_proj([enorm(E[t+k]),
    hnorm(h_{k-1}[t])]))), the block run as a one-layer LlamaModel on inputs_embeds (its own
    causal mask and rotary embeddings), positions past S-k fed zero embeddings."""
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(**{**model.lm.config.to_dict(), "num_hidden_layers": 1})
    runner = LlamaModel(cfg).eval()
    runner.norm = torch.nn.Identity()
    E = model.lm.get_input_embeddings()(ids)
    S = ids.shape[1]
    prev = model.lm(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    outs = []
    for k, head in enumerate(model.extra_heads, start=1):
        runner.layers[0] = head.mtp_block
        e = torch.zeros_like(E)
        e[:, : S - k] = E[:, k:]
        x = torch.cat([head.enorm(e), head.hnorm(prev)], dim=-1) @ head.eh_proj.weight.t()
        prev = head.post_norm(runner(inputs_embeds=x, use_cache=False).last_hidden_state)
        outs.append(prev)
    return outs


def test_matches_plain_reference_and_is_causal():
    model = sequential("llama", k=4)
    ids = torch.randint(3, V, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(ids).head_hidden[1:]
        ref = reference_depths(model, ids)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # Depth k at position t reads tokens up to t+k: changing token j moves nothing before t = j-k.
    j = 8
    changed = ids.clone()
    changed[0, j] = (changed[0, j] + 7) % V
    with torch.no_grad():
        moved = model(changed).head_hidden[1:]
    for k, (a, b) in enumerate(zip(ours, moved), start=1):
        torch.testing.assert_close(a[:, : j - k], b[:, : j - k])
        assert not torch.allclose(a[:, j - k], b[:, j - k])


def test_shifted():
    x = torch.arange(12.0).view(1, 4, 3)
    assert torch.equal(shifted(x, 1)[0, :, 0], torch.tensor([3.0, 6.0, 9.0, 0.0]))
    assert torch.equal(shifted(x, 5), torch.zeros_like(x))


@pytest.mark.parametrize("normalization", ["token_mean", "weight_mean"])
def test_fused_loss_and_gradients_equal_naive(normalization):
    ids, mask = padded_batch(1)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100  # a prompt
    weights = torch.rand(2, 10, generator=torch.Generator().manual_seed(2))
    scales = [1.0, 0.3, 0.1]
    grads, losses = [], []
    for fn in (mtp_cross_entropy, naive_mtp_cross_entropy):
        model = sequential("llama")
        out = model(ids, mask)
        res = fn(out.head_hidden, model.unembedding.weight, labels, weights, normalization=normalization,
                 head_scales=scales, chunk_size=7)
        res.loss.backward()
        losses.append(res)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    fused, naive = losses
    torch.testing.assert_close(fused.loss, naive.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.per_head_loss, naive.per_head_loss, rtol=1e-5, atol=1e-6)
    # The scaled sum, by hand from the per-head losses.
    torch.testing.assert_close(fused.loss.detach(), sum(s * l for s, l in zip(scales, fused.per_head_loss)))
    assert grads[0].keys() == grads[1].keys() and any("eh_proj" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_zero_scale_skips_a_head():
    model = sequential("llama")
    ids, mask = padded_batch()
    out = model(ids, mask)
    labels = ids.masked_fill(mask == 0, -100)
    res = mtp_cross_entropy(out.head_hidden, model.unembedding.weight, labels, head_scales=[0.0, 1.0, 0.5])
    assert torch.isnan(res.per_head_ce[0]) and res.per_head_tokens.tolist() == [14, 12, 10]
    full = mtp_cross_entropy(out.head_hidden, model.unembedding.weight, labels)
    torch.testing.assert_close(res.loss, full.per_head_loss[1] + 0.5 * full.per_head_loss[2])
    with pytest.raises(ValueError, match="head_scales has 2 values for 3 heads"):
        mtp_cross_entropy(out.head_hidden, model.unembedding.weight, labels, head_scales=[1.0, 1.0])


@pytest.mark.parametrize("lora", [False, True])
def test_export_round_trips(tmp_path, lora):
    model = sequential("qwen2")
    if lora:
        model.add_lora({"r": 4})
        assert any("extra_heads.0.eh_proj" in m for m in model.lora["adapted_modules"])
        perturb(model, seed=5, scale=0.02)
    ids, mask = padded_batch()
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / MTP_CONFIG_FILE).read_text())
    assert meta["head_type"] == "sequential" and meta["heads_layout"] == "weighted_mtp"
    assert "declares no MTP layers" in meta["transformers_mtp"]
    assert (tmp_path / "m" / HEADS_FILE).is_file()
    back = MTPModel.from_pretrained(tmp_path / "m").eval()
    assert back.head_type == "sequential" and (back.lora is not None) == lora
    with torch.no_grad():
        for a, b in zip(model.eval()(ids, mask).head_hidden, back(ids, mask).head_hidden):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(WMTPError, match="sequential MTP heads but models.policy.head_type=parallel"):
        MTPModel.from_pretrained(tmp_path / "m", head_type="parallel")


class RecordingDrafter:
    """Wraps SequentialDrafter.draft to record (committed tokens, drafts) of every call."""

    def __init__(self, monkeypatch):
        from weighted_mtp.eval import sequential_drafter

        self.calls = []
        original = sequential_drafter.SequentialDrafter.draft

        def draft(drafter, committed, head1, n):
            out = original(drafter, committed, head1, n)
            self.calls.append((list(committed), out))
            return out

        monkeypatch.setattr(sequential_drafter.SequentialDrafter, "draft", draft)


def reference_drafts(model: MTPModel, committed: list[int], n: int, vocab=None) -> list[int]:
    """Depth k's draft by an uncached forward over the committed tokens plus the drafts so far:
    head k+1's output at the position before the newest committed token."""
    m, drafts = len(committed) - 1, []
    W = model.unembedding.weight if vocab is None else model.unembedding.weight[vocab]
    for k in range(1, n + 1):
        with torch.no_grad():
            h = model(torch.tensor([committed + drafts])).head_hidden[k][0, m - 1]
        best = int((h @ W.t()).argmax())
        drafts.append(best if vocab is None else int(vocab[best]))
    return drafts


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_speculative_drafts_equal_uncached_forward(arch, monkeypatch):
    model = sequential(arch, k=4, seed=2)
    perturb(model.extra_heads, seed=9, scale=0.3)
    rec = RecordingDrafter(monkeypatch)
    for prompt_len in (1, 5):
        ids = torch.randint(3, V, (1, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
        spec = self_speculative_greedy(model, ids, 20)
        assert spec.tokens == greedy_decode(model, ids, 20).tokens
        assert spec.n_forward == 1 + len(spec.accepted_per_step)
    assert len(rec.calls) > 10
    for committed, drafts in rec.calls:
        assert drafts == reference_drafts(model, committed, len(drafts)), committed
    vocab = torch.arange(0, V, 2)
    rec.calls.clear()
    spec = self_speculative_greedy(model, ids, 16, draft_vocab=vocab)
    assert spec.tokens == greedy_decode(model, ids, 16).tokens
    for committed, drafts in rec.calls:
        assert drafts == reference_drafts(model, committed, len(drafts), vocab)
        assert all(d % 2 == 0 for d in drafts)


def test_speculative_accepts_a_learned_pattern():
    """Heads trained on a repeating sequence draft it: most drafts are accepted."""
    torch.manual_seed(0)
    model = MTPModel(make_lm("llama"), 3, head_type="sequential")
    pattern = torch.tensor([5, 9, 17, 3, 33, 21, 8, 40, 12, 27] * 6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        x = pattern[None, :40]
        loss = mtp_cross_entropy(model(x).head_hidden, model.unembedding.weight, x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids = pattern[None, :7]
    spec = self_speculative_greedy(model, ids, 30)
    assert spec.tokens == greedy_decode(model, ids, 30).tokens == pattern[7:37].tolist()
    assert sum(spec.accepted_per_step) >= 0.8 * sum(spec.drafts_per_step)


def test_gpt2_sequential_speculative_is_refused():
    model = sequential("gpt2")
    with pytest.raises(WMTPError, match="rotary"):
        self_speculative_greedy(model, torch.tensor([[3, 4]]), 4)


def test_config_keys():
    from weighted_mtp.config.load import config_from_dict
    from weighted_mtp.errors import ConfigError

    cfg = config_from_dict({}, ["models.policy.head_type=sequential", "models.policy.n_future_tokens=2",
                                "training.loss.head_scales=[1.0,0.3]"])
    assert cfg.models.policy.head_type == "sequential" and cfg.training.loss.head_scales == [1.0, 0.3]
    with pytest.raises(ConfigError, match="head_scales' must have one value per head"):
        config_from_dict({}, ["training.loss.head_scales=[1.0,0.3]"])
    with pytest.raises(ConfigError, match="head_type"):
        config_from_dict({}, ["models.policy.head_type=medusa"])
