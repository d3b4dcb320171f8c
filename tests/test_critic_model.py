"""CriticModel on tiny random Llama and GPT-2 backbones: each mode trains exactly what it says
(frozen: the head; last_n: the last blocks + final norm; lora: the adapters), the LM head is gone,
and save/load round trips restore every trained tensor, LoRA FFN adapters included."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.critic import (
    ADAPTER_DIR,
    BACKBONE_TRAINABLE_FILE,
    CRITIC_CONFIG_FILE,
    VALUE_HEAD_FILE,
    CriticModel,
)

V = 64
ARCHS = ["llama", "gpt2"]


def make_lm(arch: str):
    import transformers as tf

    torch.manual_seed(0)
    if arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             pad_token_id=0, tie_word_embeddings=True)
        return tf.LlamaForCausalLM(cfg)
    cfg = tf.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0)
    return tf.GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module", params=ARCHS)
def backbone_dir(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    make_lm(request.param).save_pretrained(path)
    return path


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, V, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return ids, mask, torch.randn(2, 10, generator=g)


def train(critic: CriticModel, steps: int = 3) -> None:
    params = [p for p in critic.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    ids, mask, target = batch()
    critic.train()
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(critic(ids, mask), target).backward()
        opt.step()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}


def values(critic: CriticModel) -> torch.Tensor:
    ids, mask, _ = batch()
    critic.eval()
    with torch.no_grad():
        return critic(ids, mask)


def test_frozen_trains_only_the_head(backbone_dir):
    critic = CriticModel.build(backbone_dir, mode="frozen")
    assert not any("lm_head" in n for n, _ in critic.named_parameters())
    assert all(not p.requires_grad for p in critic.backbone.parameters())
    assert not critic.backbone.training and critic.value_head.training
    out = critic(*batch()[:2])
    assert out.shape == (2, 10) and out.dtype == torch.float32 and not out.abs().any()
    before, head_before = snapshot(critic.backbone), snapshot(critic.value_head)
    train(critic)
    assert not changed(before, critic.backbone)
    assert all(p.grad is None for p in critic.backbone.parameters())
    assert changed(head_before, critic.value_head)
    assert not critic.backbone.training  # train() keeps a frozen backbone in eval mode


def test_last_n_trains_last_blocks_and_final_norm(backbone_dir):
    critic = CriticModel.build(backbone_dir, mode="last_n", n_unfrozen_layers=1)
    before = snapshot(critic.backbone)
    train(critic)
    moved = changed(before, critic.backbone)
    last_block = ("layers.1." if "layers.1.self_attn.q_proj.weight" in before else "h.1.")
    norm = "norm." if "norm.weight" in before else "ln_f."
    trainable = {n for n in before if n.startswith((last_block, norm))}
    assert moved == trainable and trainable
    assert {n for n, p in critic.backbone.named_parameters() if p.requires_grad} == trainable


def test_lora_trains_adapters_and_round_trips_every_one(backbone_dir, tmp_path):
    critic = CriticModel.build(backbone_dir, mode="lora", lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.1})
    trainable = [n for n, p in critic.named_parameters() if p.requires_grad]
    lora_names = [n for n in trainable if "lora_" in n]
    assert all(n.startswith("value_head.") or ".lora_A." in n or ".lora_B." in n for n in trainable)
    llama = "llama" in backbone_dir.name
    ffn = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj") if llama else ("mlp.c_fc", "mlp.c_proj")
    assert all(any(t in n for n in lora_names) for t in ffn)  # FFN adapters exist
    before = snapshot(critic)
    train(critic, steps=4)
    assert set(lora_names) <= changed(before, critic)  # every adapter moved, so the round trip means something
    ref = values(critic)
    critic.save_pretrained(tmp_path)
    loaded = CriticModel.from_pretrained(tmp_path)
    got = dict(loaded.named_parameters())
    loaded_lora = [n for n in got if "lora_" in n]
    assert sorted(loaded_lora) == sorted(lora_names)
    for name, p in critic.named_parameters():
        assert torch.equal(p, got[name]), name
    assert torch.equal(values(loaded), ref)


@pytest.mark.parametrize("mode,n", [("frozen", 0), ("last_n", 2)])
def test_round_trip(backbone_dir, tmp_path, mode, n):
    critic = CriticModel.build(backbone_dir, mode=mode, n_unfrozen_layers=n, head_type="mlp", dropout=0.1)
    train(critic)
    ref = values(critic)
    critic.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {CRITIC_CONFIG_FILE, VALUE_HEAD_FILE} | ({BACKBONE_TRAINABLE_FILE} if mode == "last_n" else set())
    cfg = json.loads((tmp_path / CRITIC_CONFIG_FILE).read_text())
    assert cfg["backbone_dir"] == str(backbone_dir) and cfg["mode"] == mode and cfg["hidden_size"] == 32
    loaded = CriticModel.from_pretrained(tmp_path)
    got = dict(loaded.named_parameters())
    for name, p in critic.named_parameters():
        assert torch.equal(p, got[name]), name
    assert torch.equal(values(loaded), ref)


def test_mtp_export_is_a_backbone(tmp_path):
    from weighted_mtp.models.mtp import MTPModel

    lm = make_lm("llama")
    MTPModel(lm, n_future_tokens=3).save_pretrained(tmp_path)
    critic = CriticModel.build(tmp_path, mode="frozen", head_type="linear")
    torch.testing.assert_close(critic.hidden_states(*batch()[:2]),
                               lm.eval().model(*batch()[:2]).last_hidden_state, rtol=0, atol=0)


def test_errors(backbone_dir, tmp_path):
    with pytest.raises(WMTPError, match="frozen, last_n, lora"):
        CriticModel.build(backbone_dir, mode="full")
    with pytest.raises(WMTPError, match="n_unfrozen_layers"):
        CriticModel.build(backbone_dir, mode="last_n", n_unfrozen_layers=3)
    with pytest.raises(WMTPError, match="n_unfrozen_layers"):
        CriticModel.build(backbone_dir, mode="last_n", n_unfrozen_layers=0)
    with pytest.raises(WMTPError, match="linear, mlp"):
        CriticModel.build(backbone_dir, head_type="deep")
    with pytest.raises(WMTPError, match="not linear layers"):
        CriticModel.build(backbone_dir, mode="lora", lora={"target_modules": ["nope"]})
    with pytest.raises(WMTPError, match=CRITIC_CONFIG_FILE):
        CriticModel.from_pretrained(tmp_path)
    CriticModel.build(backbone_dir, mode="last_n", n_unfrozen_layers=1).save_pretrained(tmp_path / "n")
    (tmp_path / "n" / BACKBONE_TRAINABLE_FILE).unlink()
    with pytest.raises(WMTPError, match=BACKBONE_TRAINABLE_FILE):
        CriticModel.from_pretrained(tmp_path / "n")
    CriticModel.build(backbone_dir, mode="lora").save_pretrained(tmp_path / "l")
    (tmp_path / "l" / ADAPTER_DIR / "adapter_model.safetensors").unlink()
    with pytest.raises(WMTPError, match="adapter_model.safetensors"):
        CriticModel.from_pretrained(tmp_path / "l")


def test_lora_load_refuses_to_drop_adapters(backbone_dir, tmp_path):
    """The bug this project replaces: FFN adapters in the file, attention-only targets on load."""
    CriticModel.build(backbone_dir, mode="lora").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / CRITIC_CONFIG_FILE).read_text())
    cfg["lora"]["target_modules"] = cfg["lora"]["target_modules"][:1]
    (tmp_path / CRITIC_CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(WMTPError, match="unexpected"):
        CriticModel.from_pretrained(tmp_path)
