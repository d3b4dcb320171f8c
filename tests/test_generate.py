"""eval.generate: batched cached generation on the micro model (as an MTPModel and as a plain HF
directory) and on a tiny GPT-2 built from a config, checked against a naive uncached loop and
against HF `generate`; finished rows leave the batch; sampling is per prompt."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.data.collate import special_prefix
from weighted_mtp.errors import WMTPError
from weighted_mtp.eval.generate import (
    GenerationConfig,
    decode_new,
    encode_prompts,
    generate,
    generate_completions,
    top_p_filter,
)

PROMPTS = ["def add(a, b):\n", "Hello", "Write a function that sorts a list of numbers in place:\n"]


@pytest.fixture(scope="module")
def tok(micro_model_dir):
    from weighted_mtp.models.load import load_tokenizer

    return load_tokenizer(micro_model_dir)


@pytest.fixture(scope="module")
def mtp(micro_model_dir):
    from weighted_mtp.models.mtp import MTPModel

    return MTPModel.from_pretrained(micro_model_dir, n_future_tokens=2).eval()


@pytest.fixture(scope="module")
def tiny_gpt2(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=48, n_embd=64, n_layer=2, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return GPT2LMHeadModel(cfg).eval()


def naive_greedy(lm, ids: list[int], n: int, eos: int) -> list[int]:
    """Argmax of a full forward each step, no cache, no padding."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = lm(input_ids=torch.tensor([ids + out])).logits
            out.append(int(logits[0, -1].argmax()))
            if out[-1] == eos:
                break
    return out


def test_greedy_equals_naive_loop_and_uses_training_format(mtp, tok):
    prompts = PROMPTS[:2]
    encoded = encode_prompts(tok, prompts)
    assert special_prefix(tok) == [tok.bos_token_id] and all(e[0] == tok.bos_token_id for e in encoded)
    got = generate(mtp, tok, prompts, GenerationConfig(max_new_tokens=12))
    for text, ids in zip(got, encoded):
        new = naive_greedy(mtp.lm, ids, 12, tok.eos_token_id)
        if new and new[-1] == tok.eos_token_id:
            new = new[:-1]
        assert text == decode_new(tok, ids, new)
        assert text  # the untrained micro model never emits EOS first here


def test_batched_equals_unbatched_left_padding(mtp, tok, micro_model_dir):
    from transformers import AutoModelForCausalLM

    cfg = dict(max_new_tokens=16)
    tok.padding_side = "right"
    one = generate(mtp, tok, PROMPTS, GenerationConfig(batch_size=1, **cfg))
    batched = generate(mtp, tok, PROMPTS, GenerationConfig(batch_size=3, **cfg))
    assert batched == one
    assert tok.padding_side == "right"  # never changed
    # A plain HF model directory (head 1 alone) gives the same text as the MTPModel.
    plain = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    assert generate(plain, tok, PROMPTS, GenerationConfig(batch_size=2, **cfg)) == one


def test_stop_sequence_is_cut_and_stops_early(mtp, tok):
    full = generate(mtp, tok, PROMPTS[:1], GenerationConfig(max_new_tokens=24))[0]
    stop = full[len(full) // 3: len(full) // 3 + 3]
    calls = []
    handle = mtp.lm.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = generate(mtp, tok, PROMPTS[:1], GenerationConfig(max_new_tokens=24, stop=[stop, "\nif __name__"]))[0]
    finally:
        handle.remove()
    assert got == full[: full.find(stop)]
    assert len(calls) < 24  # the row stopped when the stop sequence appeared, not at max_new_tokens


def test_eos_stops_a_row(mtp, tok):
    ids = encode_prompts(tok, PROMPTS[:1])[0]
    new = naive_greedy(mtp.lm, ids, 12, tok.eos_token_id)
    j = max(j for j in range(len(new)) if new[j] not in new[:j])  # the last first occurrence of a token
    gen_cfg = mtp.lm.generation_config
    saved = gen_cfg.eos_token_id
    gen_cfg.eos_token_id = [tok.eos_token_id, new[j]]  # e.g. a chat model's end-of-turn token
    rows_fed = []
    handle = mtp.lm.register_forward_pre_hook(lambda m, a, kw: rows_fed.append(kw["input_ids"].shape[0]),
                                              with_kwargs=True)
    try:
        got = generate_completions(mtp, tok, PROMPTS, GenerationConfig(max_new_tokens=12, batch_size=3))
        fed = list(rows_fed)
        solo = generate(mtp, tok, PROMPTS[1:], GenerationConfig(max_new_tokens=12, batch_size=2))
    finally:
        handle.remove()
        gen_cfg.eos_token_id = saved
    assert got.texts[0] == decode_new(tok, ids, new[:j])
    assert got.texts[1:] == solo  # the other rows keep going after one row stops
    # Row 0 made j + 1 tokens (its EOS included), the others all 12; once row 0 has stopped it
    # is no longer fed: one prompt pass plus 11 steps, 3 rows until row 0's EOS, 2 after.
    assert got.new_tokens == [j + 1, 12, 12] and got.forward_passes == 12
    assert fed == [3] * (j + 1) + [2] * (11 - j)


def test_batched_greedy_equals_hf_generate(mtp, tok):
    """The reference: HF `generate` on the same left-padded batch, rows cut at their first EOS."""
    cfg = GenerationConfig(max_new_tokens=16, batch_size=3)
    encoded = encode_prompts(tok, PROMPTS)
    width = max(map(len, encoded))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    with torch.no_grad():
        out = mtp.lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[:, width:].tolist()
    expected = []
    for e, row in zip(encoded, out):
        end = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
        expected.append(decode_new(tok, e, row[:end]))
    assert generate(mtp, tok, PROMPTS, cfg) == expected


def test_top_p_filter_equals_hf_warper():
    from transformers import TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    logits[0, :3] = 10.0  # ties at the top
    for p in (0.05, 0.3, 0.9, 0.999):
        assert torch.equal(top_p_filter(logits, p), TopPLogitsWarper(p)(None, logits.clone()))
    assert top_p_filter(logits, 1.0) is logits
    kept = torch.isfinite(top_p_filter(logits, 0.5)).sum(-1)
    assert (kept >= 1).all() and (kept < 50).all()


def test_sampling_is_seeded(mtp, tok):
    cfg = dict(max_new_tokens=12, temperature=1.0, top_p=0.95, batch_size=2)
    state = torch.random.get_rng_state()
    a = generate(mtp, tok, PROMPTS, GenerationConfig(seed=1, **cfg))
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    torch.manual_seed(123)
    assert generate(mtp, tok, PROMPTS, GenerationConfig(seed=1, **cfg)) == a
    assert generate(mtp, tok, PROMPTS, GenerationConfig(seed=2, **cfg)) != a
    # Prompt i samples from its own generator, seeded by (seed, i): neither the batch size nor
    # the prompts after it change its sample.
    assert generate(mtp, tok, PROMPTS[:2], GenerationConfig(seed=1, **cfg)) == a[:2]
    assert generate(mtp, tok, PROMPTS, GenerationConfig(seed=1, **{**cfg, "batch_size": 1})) == a
    # Repeated prompts (n samples of one task) differ from each other.
    assert len(set(generate(mtp, tok, [PROMPTS[2]] * 4, GenerationConfig(seed=1, **cfg)))) > 1
    greedy = generate(mtp, tok, PROMPTS, GenerationConfig(max_new_tokens=12))
    assert greedy != a


def test_tiny_gpt2_context_limit(tiny_gpt2, tok):
    # Learned position embeddings: a row must never run past the 48-token context, even while
    # other rows of its batch are still generating. The longest prompt here is context-limited.
    assert max(len(e) for e in encode_prompts(tok, PROMPTS)) + 40 > 48 > min(len(e) for e in encode_prompts(tok, PROMPTS)) + 40
    one = generate(tiny_gpt2, tok, PROMPTS, GenerationConfig(max_new_tokens=40, batch_size=1))
    assert generate(tiny_gpt2, tok, PROMPTS, GenerationConfig(max_new_tokens=40, batch_size=3)) == one
    long_prompt = " ".join(["word"] * 60)
    n = len(encode_prompts(tok, [long_prompt])[0])
    with pytest.raises(WMTPError, match=rf"prompt 1 is {n} tokens long .* context is 48 tokens"):
        generate(tiny_gpt2, tok, ["short", long_prompt], GenerationConfig(max_new_tokens=4))


def _batch_at_a_time_passes(new_tokens: list[int], lengths: list[int], batch_size: int) -> int:
    """Forward passes of decoding length-sorted batches one after another (HF generate's way):
    each batch costs as many passes as its longest completion."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return sum(max(new_tokens[i] for i in order[b:b + batch_size]) for b in range(0, len(order), batch_size))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_waiting_prompts_join_the_batch_as_rows_finish(arch, mtp, tiny_gpt2, tok):
    """Rows finish at different steps (an EOS remapped to a token some rows emit; for GPT-2 the
    48-token context); waiting prompts take their places, with their caches left-padded into the
    running batch (RoPE and learned positions alike), and every text equals decoding one by one."""
    lm = mtp.lm if arch == "llama" else tiny_gpt2
    prompts = PROMPTS + ["x = 1\n", "def mul(a, b):\n    return", "import os\n\n\n", "class A:\n"]
    max_new = 12 if arch == "llama" else 40
    saved = lm.generation_config.eos_token_id
    if arch == "llama":
        first = [t for t in (naive_greedy(lm, e, 1, -1)[0] for e in encode_prompts(tok, prompts))]
        lm.generation_config.eos_token_id = [tok.eos_token_id, first[1]]  # some rows stop at once
    try:
        one = generate(lm, tok, prompts, GenerationConfig(max_new_tokens=max_new, batch_size=1))
        got = generate_completions(lm, tok, prompts, GenerationConfig(max_new_tokens=max_new, batch_size=3))
    finally:
        lm.generation_config.eos_token_id = saved
    assert got.texts == one
    lengths = [len(e) for e in encode_prompts(tok, prompts)]
    assert len(set(got.new_tokens)) > 1  # rows did finish at different steps
    assert got.forward_passes < _batch_at_a_time_passes(got.new_tokens, lengths, 3)


def test_config_validation():
    with pytest.raises(WMTPError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(WMTPError, match="top_p"):
        GenerationConfig(top_p=0)
    assert GenerationConfig(stop="\ndef ").stop == ("\ndef ",)
