"""Sequential heads in transformers' own MTP layout, on a tiny random GLM-4.5-Air-shaped model
(Glm4MoeForCausalLM: 46 layers, MoE blocks, one MTP layer; nothing is downloaded): train a few
steps with our loss, export, reload with plain transformers, check that transformers' MtpModel
reads exactly our head (same weights, same draft logits) and that `generate(use_mtp=True)`
gives plain greedy's tokens while its drafts get accepted; import the layout back, from our
export and from a bare upstream-style directory."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
from weighted_mtp.models.mtp import HEADS_FILE, MTP_CONFIG_FILE, MTPModel

PATTERN = [5, 9, 17, 3, 33, 21, 8, 40, 12, 27, 50, 6]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_glm():
    from transformers import Glm4MoeConfig, Glm4MoeForCausalLM

    # 46 layers: transformers finds GLM-4.5's MTP weights by absolute layer number (46 or 92).
    cfg = Glm4MoeConfig(vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                        num_hidden_layers=46, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                        n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=45,
                        max_position_embeddings=128, num_mtp_layers=1, tie_word_embeddings=False,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return Glm4MoeForCausalLM(cfg).eval()


PROMPTS = [[7, 7, 3, 9], [11, 30, 5], PATTERN[:6]]


@pytest.fixture(scope="module")
def trained():
    """K = 2 (one MTP layer, as GLM-4.5 ships), the head trained after the model: the trunk
    frozen, 60 AdamW steps of our fused loss (head 1 skipped by a 0 scale) on the model's own
    greedy continuations of random prompts (self-distillation)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model = MTPModel(tiny_glm(), 2, head_type="sequential")
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, 64, (16, 4), generator=g)
    with torch.no_grad():
        seqs = model.lm.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=20,
                                 do_sample=False)
    labels = seqs.clone()
    labels[:, :4] = -100
    model.lm.requires_grad_(False)
    opt = torch.optim.AdamW(model.extra_heads.parameters(), lr=3e-2)
    ce = []
    for _ in range(60):
        rows = torch.randint(0, len(seqs), (4,), generator=g)
        res = mtp_cross_entropy(model(seqs[rows]).head_hidden, model.unembedding.weight, labels[rows],
                                head_scales=[0.0, 1.0])
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        ce.append(float(res.per_head_ce[1]))
    torch.set_num_threads(before)
    model.distill_ce = (sum(ce[:5]) / 5, sum(ce[-5:]) / 5)
    return model.eval()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("glm") / "export"
    trained.save_pretrained(out)
    return out


class ForwardCounter:
    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_pre_hook(self.hook)

    def hook(self, *_):
        self.n += 1


def test_export_is_the_families_own_layout(exported, trained):
    from safetensors import safe_open

    meta = json.loads((exported / MTP_CONFIG_FILE).read_text())
    assert meta["head_type"] == "sequential" and meta["heads_layout"] == "transformers"
    assert not (exported / HEADS_FILE).exists()
    config = json.loads((exported / "config.json").read_text())
    assert config["num_nextn_predict_layers"] == 1
    with safe_open(exported / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    for name in ("eh_proj.weight", "enorm.weight", "hnorm.weight", "shared_head.norm.weight",
                 "self_attn.q_proj.weight", "mlp.experts.0.gate_proj.weight", "mlp.gate.weight"):
        assert f"model.layers.46.{name}" in keys, name
    assert not any(k.startswith("model.layers.47.") for k in keys)
    assert trained.lm.config.num_mtp_layers == 1  # the live model's config is left as it was


def test_transformers_mtp_model_reads_our_head(exported, trained):
    from transformers import AutoModelForCausalLM
    from transformers.modeling_layers import MtpModel

    lm = AutoModelForCausalLM.from_pretrained(exported).eval()
    reader = MtpModel.from_pretrained(lm)
    ours = trained.extra_heads[0].state_dict()
    theirs = reader.layers[0].state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    # Same draft logits: transformers' layer 0 over positions t (reading token t+1) vs our head 2.
    ids = torch.tensor([PATTERN[:10]])
    with torch.no_grad():
        out = trained(ids)
        h = reader.forward_layer(0, out.head_hidden[0][:, :-1], torch.arange(1, 10)[None], None,
                                 input_ids=ids[:, 1:])
        theirs = reader._project_to_logits(h)
        mine = trained.head_logits(out.head_hidden[1][:, :-1])
    torch.testing.assert_close(theirs, mine, rtol=1e-4, atol=1e-5)


def test_generate_use_mtp_matches_greedy_and_accepts_drafts(exported):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(exported).eval()
    forwards = 0
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        plain = lm.generate(ids, max_new_tokens=24, do_sample=False)
        counter = ForwardCounter(lm)
        mtp = lm.generate(ids, max_new_tokens=24, do_sample=False, use_mtp=True)
        counter.handle.remove()
        assert torch.equal(mtp, plain), prompt
        forwards += counter.n
    # Plain greedy needs 3 x 24 forwards; every accepted draft of our head saves one. (This random
    # trunk's greedy text is repetitive, so even an untrained head, which starts as the last block
    # once more, is often right: the bound shows transformers drafts with our head; that it is
    # exactly our head is test_transformers_mtp_model_reads_our_head.)
    assert forwards <= 62, forwards


def test_self_distillation_trained_the_head(trained):
    first, last = trained.distill_ce
    assert last < first - 0.5, (first, last)


def test_import_back(exported, trained, tmp_path):
    ids = torch.tensor([PATTERN[:9]])
    with torch.no_grad():
        want = trained(ids).head_hidden
    back = MTPModel.from_pretrained(exported).eval()
    assert back.head_type == "sequential" and back.n_future_tokens == 2
    # A bare upstream-style directory (no mtp_config.json): sequential heads read from the HF weights.
    bare = tmp_path / "bare"
    shutil.copytree(exported, bare)
    (bare / MTP_CONFIG_FILE).unlink()
    upstream = MTPModel.from_pretrained(bare, head_type="sequential").eval()
    plain = MTPModel.from_pretrained(bare)  # parallel by default: fresh heads, MTP weights unused
    assert plain.head_type == "parallel" and plain.n_future_tokens == 1
    with torch.no_grad():
        for model in (back, upstream):
            for a, b in zip(model(ids).head_hidden, want):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_more_heads_than_transformers_can_find_are_saved_in_our_file(tmp_path):
    model = MTPModel(tiny_glm(), 3, head_type="sequential")
    model.save_pretrained(tmp_path / "k3")
    meta = json.loads((tmp_path / "k3" / MTP_CONFIG_FILE).read_text())
    assert meta["heads_layout"] == "weighted_mtp" and "model.layers.47" in meta["transformers_mtp"]
    assert (tmp_path / "k3" / HEADS_FILE).is_file()
    back = MTPModel.from_pretrained(tmp_path / "k3")
    ids = torch.tensor([PATTERN[:5]])
    with torch.no_grad():
        for a, b in zip(back(ids).head_hidden, model.eval()(ids).head_hidden):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
