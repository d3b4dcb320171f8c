"""ReferenceModel: frozen, loads plain HF and MTP export directories, and its per-token CE equals
the shifted CE of the full logits."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from weighted_mtp.data.collate import SFTCollator
from weighted_mtp.data.records import Record
from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.models.load import load_tokenizer
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.models.reference import ReferenceModel, check_same_tokenizer


def naive_ce(logits, labels):
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2).double(), labels[:, 1:], reduction="none", ignore_index=-100)
    return F.pad(ce, (1, 0)).float()


def records():
    return [Record(instruction=f"Write f{i}." + " Be brief." * i, input="",
                   output="def f(x):\n    return x\n" * (i + 1), task_id=f"p{i}_correct_0", is_correct=True,
                   problem_id=f"p{i}", difficulty=1) for i in range(3)]


def test_token_ce_matches_full_logits_on_padded_batch(micro_model_dir):
    tok = load_tokenizer(micro_model_dir)
    batch = SFTCollator(tok, max_length=96)(records())
    assert (batch["attention_mask"] == 0).any() and (batch["labels"][:, :10] == -100).all()
    ref = ReferenceModel.load(micro_model_dir)
    assert not ref.lm.training and not any(p.requires_grad for p in ref.lm.parameters())
    got = ref.token_ce(batch["input_ids"], batch["attention_mask"], batch["labels"], chunk_size=7)
    lm = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    with torch.no_grad():
        logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not got.requires_grad and got.dtype == torch.float32
    torch.testing.assert_close(got, naive_ce(logits, batch["labels"]), rtol=1e-5, atol=1e-5)
    assert (got[batch["labels"] == -100] == 0).all() and (got[batch["labels"] != -100] > 0).all()


def test_mtp_export_loads_as_reference_with_head1_ce(tmp_path):
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    mtp = MTPModel(LlamaForCausalLM(cfg), n_future_tokens=3).eval()
    with torch.no_grad():
        for p in mtp.extra_heads.parameters():
            p.add_(torch.randn_like(p))  # heads differ from head 1, so loading the wrong one would show
    mtp.save_pretrained(tmp_path / "export")
    input_ids = torch.randint(0, 64, (2, 12))
    mask = torch.ones_like(input_ids)
    mask[1, 9:] = 0
    labels = input_ids.clone()
    labels[:, :4] = -100
    labels[1, 9:] = -100
    ref = ReferenceModel.load(tmp_path / "export")
    got = ref.token_ce(input_ids, mask, labels)
    with torch.no_grad():
        head1 = mtp.head_logits(mtp(input_ids, mask).head_hidden[0])
    torch.testing.assert_close(got, naive_ce(head1, labels), rtol=1e-5, atol=1e-5)


def test_load_errors_and_tokenizer_check(tmp_path, micro_model_dir):
    with pytest.raises(WMTPError, match="no config.json"):
        ReferenceModel.load(tmp_path)
    a, b = load_tokenizer(micro_model_dir), load_tokenizer(micro_model_dir)
    check_same_tokenizer(a, b, "POLICY_DIR", "REF_DIR")
    b.add_tokens(["<extra_token>"])
    with pytest.raises(ConfigError, match="POLICY_DIR.*REF_DIR.*different vocabularies"):
        check_same_tokenizer(a, b, "POLICY_DIR", "REF_DIR")
    c = load_tokenizer(micro_model_dir)
    c.eos_token = c.pad_token
    with pytest.raises(ConfigError, match="POLICY_DIR.*REF_DIR.*eos_token_id"):
        check_same_tokenizer(a, c, "POLICY_DIR", "REF_DIR")
