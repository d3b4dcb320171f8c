"""`wmtp eval --speculative`: when it is used, that its completions are batched greedy's exactly
(stop sequences and EOS cut the same way), and what the summary records."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.errors import ConfigError
from weighted_mtp.eval.generate import GenerationConfig, generate_completions
from weighted_mtp.eval.run import EvalSettings, evaluate_checkpoint
from weighted_mtp.eval.speculative_eval import decide, load_mtp_model, speculative_completions
from weighted_mtp.models.mtp import MTPModel


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mtp_export(micro_model_dir, tmp_path_factory):
    """The micro model with 2 sequential heads (perturbed so they draft something), exported."""
    torch.manual_seed(0)
    model = MTPModel.from_pretrained(micro_model_dir, n_future_tokens=3, head_type="sequential")
    with torch.no_grad():
        for p in model.extra_heads.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    out = tmp_path_factory.mktemp("spec") / "export"
    from weighted_mtp.models.load import load_tokenizer

    model.save_pretrained(out, tokenizer=load_tokenizer(micro_model_dir))
    return out


def test_decide(mtp_export, micro_model_dir):
    assert decide("auto", 0.0, mtp_export) == (True, "greedy decoding and 2 extra heads")
    assert decide("auto", 0.8, mtp_export)[0] is False
    assert decide("auto", 0.0, micro_model_dir) == (False, "the checkpoint has no extra MTP heads to draft with")
    assert decide("off", 0.0, mtp_export) == (False, "--speculative off")
    with pytest.raises(ConfigError, match="--speculative on: sampling"):
        decide("on", 0.5, mtp_export)
    with pytest.raises(ConfigError, match="--speculative must be one of"):
        decide("maybe", 0.0, mtp_export)


def test_completions_equal_batched_greedy(mtp_export):
    from weighted_mtp.models.load import load_tokenizer

    model, tok = load_mtp_model(mtp_export), load_tokenizer(mtp_export)
    prompts = ["def add(a, b):", "def fib(n):\n    if n < 2:", "# sort a list\n"]
    cfg = GenerationConfig(max_new_tokens=40, temperature=0.0, stop=("\ndef ",), batch_size=1)
    plain = generate_completions(model.lm, tok, prompts, cfg)
    spec, stats = speculative_completions(model, tok, prompts, cfg, check=2)
    assert spec.texts == plain.texts
    assert stats["identical_to_plain_greedy"] is True and stats["checked_prompts"] == 2
    assert stats["heads"] == 2 and len(stats["acceptance_by_head"]) == stats["drafts"]
    assert stats["passes"] == spec.forward_passes and stats["tokens_per_pass"] >= 1.0
    assert stats["speedup_vs_plain_greedy"] > 0
    assert stats["drafts"] in (1, 2) and set(stats["drafts_tuned_tokens_per_s"]) == {0, 1, 2}
    assert stats["drafts_tuned_tokens_per_s"][stats["drafts"]] == max(
        v for d, v in stats["drafts_tuned_tokens_per_s"].items() if d > 0)


def test_a_fixed_draft_count_is_used_and_checked(mtp_export):
    from weighted_mtp.models.load import load_tokenizer

    model, tok = load_mtp_model(mtp_export), load_tokenizer(mtp_export)
    cfg = GenerationConfig(max_new_tokens=24, temperature=0.0, batch_size=1)
    plain = generate_completions(model.lm, tok, ["def add(a, b):"], cfg)
    spec, stats = speculative_completions(model, tok, ["def add(a, b):"], cfg, check=1, drafts=1)
    assert spec.texts == plain.texts and stats["drafts"] == 1
    assert len(stats["acceptance_by_head"]) == 1 and stats["drafts_tuned_tokens_per_s"] is None
    with pytest.raises(ConfigError, match="--speculative-drafts must be in \\[0, 2\\]"):
        speculative_completions(model, tok, ["def add(a, b):"], cfg, drafts=3)


def test_eval_summary_records_speculative_decoding(mtp_export, tmp_path):
    settings = EvalSettings(benchmark="embedded", limit=2, n=1, ks=[1], temperature=0.0, seeds=[0],
                            max_new_tokens=24, prompt_format="raw", threads=1)
    spec = evaluate_checkpoint(mtp_export, settings, tmp_path / "a")
    off = evaluate_checkpoint(mtp_export, EvalSettings(**{**settings.__dict__, "speculative": "off",
                                                          "batch_size": 1}), tmp_path / "b")
    assert spec["decoding"] == "speculative" and off["decoding"] == "batched"
    assert spec["speculative"]["identical_to_plain_greedy"] is True
    assert spec["pass_at_k"] == off["pass_at_k"]
    read = lambda d: (d / "embedded" / "seed0" / "samples.jsonl").read_text()  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b")
