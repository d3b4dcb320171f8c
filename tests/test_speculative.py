"""eval.speculative: self-speculative greedy decoding gives exactly head 1's greedy tokens, on a
micro MTP model trained a little (drafts get accepted), on untrained ones (drafts mostly
rejected) and on a tiny GPT-2 (the cache reaches the block positionally)."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.errors import WMTPError
from weighted_mtp.eval.speculative import greedy_decode, self_speculative_greedy

CORPUS = "def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a * b\n\n"
PROMPTS = ["def add(a, b):", "def mul(", "Hello"]


@pytest.fixture(scope="module")
def tok(micro_model_dir):
    from weighted_mtp.models.load import load_tokenizer

    return load_tokenizer(micro_model_dir)


def prompt_ids(tok, text: str) -> torch.Tensor:
    return torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])


@pytest.fixture(scope="module")
def trained(micro_model_dir, tok):
    """K=3 micro model, 30 AdamW steps of the project's MTP loss on a repeated snippet: enough
    for heads 2 and 3 to agree with head 1 part of the time."""
    from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
    from weighted_mtp.models.mtp import MTPModel

    torch.manual_seed(0)
    model = MTPModel.from_pretrained(micro_model_dir, n_future_tokens=3)
    data = torch.tensor(tok(CORPUS * 12, add_special_tokens=False)["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        starts = torch.randint(0, len(data) - 32, (4,)).tolist()
        x = torch.stack([data[s:s + 32] for s in starts])
        loss = mtp_cross_entropy(model(x).head_hidden, model.unembedding.weight, x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_trained_model_accepts_drafts_and_matches_greedy(trained, tok):
    accepted = []
    for text in PROMPTS:
        ids = prompt_ids(tok, text)
        plain = greedy_decode(trained, ids, 40)
        spec = self_speculative_greedy(trained, ids, 40)
        assert spec.tokens == plain.tokens, text
        assert len(spec.tokens) == 40 and plain.n_forward == 40
        assert spec.n_forward == 1 + len(spec.accepted_per_step)
        assert sum(a + 1 for a in spec.accepted_per_step) >= 39  # each pass keeps accepted + 1
        accepted += spec.accepted_per_step
    mean = sum(accepted) / len(accepted)
    assert mean > 0.3, accepted
    assert all(0 <= a <= 2 for a in accepted)
    # Drafting with head 2 only (head 3 not run): same tokens, at most one draft per pass.
    ids = prompt_ids(tok, PROMPTS[0])
    one = self_speculative_greedy(trained, ids, 40, max_drafts=1)
    assert one.tokens == greedy_decode(trained, ids, 40).tokens
    assert set(one.accepted_per_step) <= {0, 1} and 1 in one.accepted_per_step


def test_greedy_decode_equals_hf_generate(trained, tok):
    ids = prompt_ids(tok, PROMPTS[0])
    hf = trained.lm.generate(ids, do_sample=False, max_new_tokens=20, min_new_tokens=20, top_k=None,
                             pad_token_id=tok.pad_token_id)
    assert greedy_decode(trained, ids, 20).tokens == hf[0, ids.shape[1]:].tolist()


def test_eos_and_max_new_tokens_exact(trained, tok):
    ids = prompt_ids(tok, PROMPTS[1])
    plain = greedy_decode(trained, ids, 24).tokens
    for n in (1, 2, 3, 5, 7, 11):
        assert self_speculative_greedy(trained, ids, n).tokens == plain[:n]
    for j in range(1, 16):  # EOS anywhere, including inside a block of accepted drafts
        eos = plain[j]
        want = plain[: plain.index(eos) + 1]
        assert self_speculative_greedy(trained, ids, 24, eos_token_id=eos).tokens == want
        assert greedy_decode(trained, ids, 24, eos_token_id=[eos]).tokens == want
    assert self_speculative_greedy(trained, ids, 24, eos_token_id=plain[0]).tokens == plain[:1]


def test_untrained_models_match_greedy(micro_model_dir, tok):
    from weighted_mtp.models.mtp import MTPModel

    model = MTPModel.from_pretrained(micro_model_dir, n_future_tokens=4).eval()
    torch.manual_seed(1)
    for head in model.extra_heads:  # random heads: drafts are (nearly) always rejected
        for p in head.parameters():
            torch.nn.init.normal_(p, std=0.1)
    ids = prompt_ids(tok, PROMPTS[2])
    spec = self_speculative_greedy(model, ids, 24)
    assert spec.tokens == greedy_decode(model, ids, 24).tokens
    assert sum(spec.accepted_per_step) <= len(spec.accepted_per_step) // 2


def test_tiny_gpt2(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    from weighted_mtp.models.mtp import MTPModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=2))
    model = MTPModel(lm, 3).eval()
    ids = prompt_ids(tok, PROMPTS[0])
    assert self_speculative_greedy(model, ids, 30).tokens == greedy_decode(model, ids, 30).tokens


def test_errors(micro_model_dir, trained, tok):
    from weighted_mtp.models.mtp import MTPModel

    k1 = MTPModel.from_pretrained(micro_model_dir, n_future_tokens=1)
    with pytest.raises(WMTPError, match="n_future_tokens=1"):
        self_speculative_greedy(k1, prompt_ids(tok, "x"), 4)
    with pytest.raises(WMTPError, match="needs an MTPModel"):
        self_speculative_greedy(k1.lm, prompt_ids(tok, "x"), 4)
    with pytest.raises(WMTPError, match="max_drafts"):
        self_speculative_greedy(trained, prompt_ids(tok, "x"), 4, max_drafts=3)
    with pytest.raises(WMTPError, match=r"\[1, S\]"):
        self_speculative_greedy(trained, torch.zeros(2, 3, dtype=torch.long), 4)


def test_best_draft_count_by_hand():
    from weighted_mtp.eval.speculative import best_draft_count

    assert best_draft_count({0: 10.0, 1: 12.0, 2: 13.5, 3: 11.0}) == 2
    assert best_draft_count({0: 10.0, 1: 12.0, 2: 12.0, 3: 11.0}) == 1  # a tie goes to fewer drafts
    assert best_draft_count({0: 20.0, 1: 12.0, 2: 9.0}) == 1  # none beats plain: still the best count
    with pytest.raises(WMTPError, match="no draft count"):
        best_draft_count({0: 10.0})


def test_tune_drafts_keeps_the_count_with_the_most_tokens_per_second(trained, tok, monkeypatch):
    """A fake clock charges each decode cost[d] per forward pass: the choice must follow the
    measured time, not the pass count (3 drafts need the fewest passes but cost the most)."""
    import weighted_mtp.eval.speculative as spec

    cost = {0: 1.0, 1: 1.05, 2: 1.9}
    clock = [0.0]
    real_greedy, real_spec = spec.greedy_decode, spec.self_speculative_greedy
    passes: dict[int, int] = {}

    def greedy(*args, **kwargs):
        out = real_greedy(*args, **kwargs)
        clock[0] += cost[0] * out.n_forward
        passes[0] = out.n_forward
        return out

    def drafting(*args, max_drafts, **kwargs):
        out = real_spec(*args, max_drafts=max_drafts, **kwargs)
        clock[0] += cost[max_drafts] * out.n_forward
        passes[max_drafts] = out.n_forward
        return out

    monkeypatch.setattr(spec, "greedy_decode", greedy)
    monkeypatch.setattr(spec, "self_speculative_greedy", drafting)
    monkeypatch.setattr(spec.time, "perf_counter", lambda: clock[0])
    tuning = spec.tune_drafts(trained, [prompt_ids(tok, PROMPTS[0])], 40)
    assert set(tuning.tokens_per_s) == {0, 1, 2}
    for d, rate in tuning.tokens_per_s.items():  # 40 tokens in passes[d] * cost[d] seconds
        assert rate == pytest.approx(40 / (passes[d] * cost[d]))
    expected = max((1, 2), key=lambda d: (40 / (passes[d] * cost[d]), -d))
    assert passes[2] < passes[1] < passes[0] and tuning.drafts == expected
    assert tuning.speedup == pytest.approx(tuning.tokens_per_s[expected] / tuning.tokens_per_s[0])


def test_acceptance_by_head_by_hand():
    from weighted_mtp.eval.speculative import acceptance_by_head

    # 4 passes offering 2 drafts: accepted 0, 1, 2, 2. Head 2 was checked in all 4 and accepted in 3;
    # head 3 was checked where head 2 was accepted (3 passes) and accepted in 2; head 4 never offered.
    assert acceptance_by_head([0, 1, 2, 2], [2, 2, 2, 2], 3) == [0.75, 2 / 3, None]
    assert acceptance_by_head([1, 0], [1, 0], 1) == [1.0]  # a pass offering no draft checks nothing
