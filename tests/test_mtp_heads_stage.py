"""Stage mtp_heads on the micro model: the cached set holds the model's own greedy continuations
and head-1 states equal to a fresh forward's, the trunk and head 1 stay bit-identical while the
heads train, the draft vocabulary is the most frequent targets and is saved with the model, and
a second run reads the cached set instead of generating again."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO
from tiny_runs import in_process_train
from weighted_mtp.config import load_config
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.errors import ConfigError
from weighted_mtp.models.mtp import MTP_CONFIG_FILE, MTPModel
from weighted_mtp.mtp_heads import distill
from weighted_mtp.mtp_heads.distill import DistillItem, draft_vocabulary
from weighted_mtp.objectives.mtp_heads import HeadsCollator, MTPHeadsObjective

CONFIG = REPO / "configs" / "mtp_heads" / "sequential_smollm2.yaml"


def overrides(model_dir, **extra) -> list[str]:
    values = {"models.policy.path": str(model_dir), "models.policy.n_future_tokens": 3,
              "mtp_heads.prompt_format": "alpaca", "mtp_heads.max_new_tokens": 12,
              "mtp_heads.generation_batch_size": 4, "mtp_heads.draft_vocab_size": 40,
              "data_sampling.n_samples": 8, "data_sampling.val_n_samples": 4, "dataset.max_length": 160,
              "training.max_steps": 4, "training.batch_size": 4, "training.learning_rate": 1e-2,
              "training.eval_every": 0, "runtime.num_threads": 1}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def run(tmp_path_factory, micro_model_dir):
    cfg = load_config(CONFIG, overrides(micro_model_dir))
    out = tmp_path_factory.mktemp("heads") / "run"
    in_process_train(cfg, out)
    return cfg, out


def test_trunk_frozen_heads_trained_vocab_saved(run, micro_model_dir):
    cfg, out = run
    final = MTPModel.from_pretrained(out / "final")
    start = MTPModel.from_pretrained(micro_model_dir, n_future_tokens=3, head_type="sequential")
    assert final.head_type == "sequential" and final.n_future_tokens == 3
    for (name, a), (_, b) in zip(final.lm.named_parameters(), start.lm.named_parameters()):
        assert torch.equal(a, b), f"{name}: the frozen LM moved"
    moved = [n for (n, a), (_, b) in zip(final.extra_heads.named_parameters(), start.extra_heads.named_parameters())
             if not torch.equal(a, b)]
    assert any("eh_proj" in n for n in moved) and any("mtp_block" in n for n in moved)
    meta = json.loads((out / "final" / MTP_CONFIG_FILE).read_text())
    assert len(meta["draft_vocab"]) <= 40 and meta["draft_vocab"] == sorted(meta["draft_vocab"])
    assert torch.equal(final.draft_vocab, torch.tensor(meta["draft_vocab"]))
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final_val = [e for e in events if "val/acc_head2" in e][-1]
    assert 0 < final_val["val/acc_head3"] <= 1 and final_val["val/ce_head2"] > 0


def test_cached_set_is_greedy_continuations_with_head1_states(run, micro_model_dir, monkeypatch):
    cfg, _ = run
    objective = MTPHeadsObjective(cfg)
    monkeypatch.setattr(distill, "greedy_continuations", lambda *a, **k: pytest.fail("rebuilt a cached set"))
    path, items = objective.load_items("train")
    assert path.is_file() and len(items) == 8
    model = MTPModel.from_pretrained(micro_model_dir).eval()
    for item in items[:3]:
        ids = item.input_ids[None]
        with torch.no_grad():
            fresh = model(ids).head_hidden[0][0]
            logits = model.head_logits(fresh)
        torch.testing.assert_close(item.head1[:-1], fresh[:-1], rtol=1e-4, atol=1e-4)
        assert torch.equal(item.head1[-1], torch.zeros_like(item.head1[-1]))
        # Greedy: every continuation token is head 1's argmax after the tokens before it.
        cont = item.input_ids[item.prompt_len:]
        assert torch.equal(logits[item.prompt_len - 1:-1].argmax(-1), cont)
    assert torch.equal(objective.vocab, draft_vocabulary(items, 40, 10 ** 5))


def test_data_source_teacher_forces_the_responses(tmp_path, micro_model_dir):
    cfg = load_config(CONFIG, overrides(micro_model_dir, **{"mtp_heads.source": "data",
                                                               "data_sampling.n_samples": 3}))
    _, items = MTPHeadsObjective(cfg).load_items("train")
    model = MTPModel.from_pretrained(micro_model_dir).eval()
    assert len(items) == 3 and all(int(it.input_ids[-1]) == model.config.eos_token_id for it in items)
    with torch.no_grad():
        fresh = model(items[0].input_ids[None]).head_hidden[0][0]
    torch.testing.assert_close(items[0].head1[:-1], fresh[:-1], rtol=1e-5, atol=1e-5)


def test_draft_vocabulary_and_collator():
    items = [DistillItem(torch.tensor([1, 2, 7, 7, 5, 9]), 2, torch.zeros(6, 4)),
             DistillItem(torch.tensor([3, 5, 5, 8]), 1, torch.zeros(4, 4))]
    # targets: 7 7 5 9 | 5 5 8 -> 5 x3, 7 x2, then 8 and 9 once (8 wins the tie by its lower id)
    assert draft_vocabulary(items, 3, 12).tolist() == [5, 7, 8]
    assert draft_vocabulary(items, 100, 12).tolist() == [5, 7, 8, 9]
    assert draft_vocabulary(items, None, 12) is None
    batch = HeadsCollator(0, torch.tensor([5, 7, 8]))(items)
    assert batch["input_ids"].tolist() == [[1, 2, 7, 7, 5, 9], [3, 5, 5, 8, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [6, 4]
    I = IGNORE_INDEX
    assert batch["labels"].tolist() == [[I, I, 1, 1, 0, I], [I, 0, 0, 2, I, I]]


def test_config_errors(micro_model_dir):
    for key, value, match in [("models.policy.head_type", "parallel", "head_type: sequential"),
                              ("models.policy.n_future_tokens", 1, "n_future_tokens must be >= 2"),
                              ("training.use_lora", "true", "use_lora: false")]:
        with pytest.raises(ConfigError, match=match):
            MTPHeadsObjective(load_config(CONFIG, overrides(micro_model_dir, **{key: value})))
    with pytest.raises(ConfigError, match="mtp_heads.draft_vocab_size"):
        load_config(CONFIG, overrides(micro_model_dir, **{"mtp_heads.draft_vocab_size": 0}))
