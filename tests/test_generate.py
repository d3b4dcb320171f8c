"""eval.generate: batched HF generation on the micro model (as an MTPModel and as a plain HF
directory) and on a tiny GPT-2 built from a config."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.data.collate import special_prefix
from weighted_mtp.errors import WMTPError
from weighted_mtp.eval.generate import GenerationConfig, decode_new, encode_prompts, generate

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
    try:
        got = generate(mtp, tok, PROMPTS, GenerationConfig(max_new_tokens=12, batch_size=3))
        solo = generate(mtp, tok, PROMPTS[1:], GenerationConfig(max_new_tokens=12, batch_size=2))
    finally:
        gen_cfg.eos_token_id = saved
    assert got[0] == decode_new(tok, ids, new[:j])
    assert got[1:] == solo  # the other rows keep going after one row stops


def test_sampling_is_seeded(mtp, tok):
    cfg = dict(max_new_tokens=12, temperature=1.0, top_p=0.95, batch_size=2)
    state = torch.random.get_rng_state()
    a = generate(mtp, tok, PROMPTS, GenerationConfig(seed=1, **cfg))
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    torch.manual_seed(123)
    assert generate(mtp, tok, PROMPTS, GenerationConfig(seed=1, **cfg)) == a
    assert generate(mtp, tok, PROMPTS, GenerationConfig(seed=2, **cfg)) != a
    # Batch b's seed depends on (seed, b) only: batch 0 alone gives the same sample.
    assert generate(mtp, tok, PROMPTS[:2], GenerationConfig(seed=1, **cfg)) == a[:2]
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


def test_config_validation():
    with pytest.raises(WMTPError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(WMTPError, match="top_p"):
        GenerationConfig(top_p=0)
    assert GenerationConfig(stop="\ndef ").stop == ("\ndef ",)
