"""LoRA on the MTP policy (`training.use_lora`): adapters on every block projection of the trunk
and of every extra head, nothing else trains but a value head, save/load restores every adapter
(FFN ones included) or fails naming the file, `wmtp export --merge` gives a plain HF model equal
to the adapted one, evaluation merges on load, and training + resume go through the same path."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO, tiny_training_overrides
from test_mtp_model import make_lm
from weighted_mtp.cli import main
from weighted_mtp.config import load_config
from weighted_mtp.errors import WMTPError
from weighted_mtp.models.load import load_tokenizer
from weighted_mtp.models.lora import LORA_CONFIG_FILE, LORA_WEIGHTS_FILE, adapter_state, adapted_modules, base_layers
from weighted_mtp.models.mtp import MTP_CONFIG_FILE, MTPModel
from weighted_mtp.training import checkpoint as ckpt
from weighted_mtp.training.loop import train

LLAMA_PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}


def randomize_adapters(model, seed=0, std=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_state(model).values():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def lora_micro(micro_model_dir, k=3, value_head=True):
    model = MTPModel.from_pretrained(micro_model_dir, n_future_tokens=k)
    if value_head:
        model.attach_value_head("mlp")
    model.add_lora(LORA)
    randomize_adapters(model)
    return model.eval()


def batch(seed=0, vocab=200):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (2, 12), generator=g)


def outputs(model, ids):
    with torch.no_grad():
        out = model(ids)
        return [model.head_logits(h) for h in out.head_hidden], out.trunk_hidden


@pytest.fixture(scope="module")
def saved(micro_model_dir, tmp_path_factory):
    model = lora_micro(micro_model_dir)
    directory = tmp_path_factory.mktemp("lora") / "model"
    model.save_pretrained(directory, tokenizer=load_tokenizer(micro_model_dir))
    return model, directory


def test_adapters_cover_trunk_and_heads_and_nothing_else_trains(micro_model_dir):
    model = lora_micro(micro_model_dir)
    expected = {f"lm.model.layers.{i}.{proj}" for i in range(4) for proj in LLAMA_PROJ}
    expected |= {f"extra_heads.{i}.{proj}" for i in range(2) for proj in LLAMA_PROJ}
    assert set(adapted_modules(model)) == expected
    assert model.lora["target_modules"] == [p.rsplit(".", 1)[-1] for p in LLAMA_PROJ]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if ".lora_A." in n or ".lora_B." in n or n.startswith("value_head.")}
    assert len([n for n in trainable if "lora_" in n]) == 2 * len(expected)
    assert any(n.startswith("value_head.") for n in trainable)
    assert not model.unembedding.weight.requires_grad and not model.lm.get_input_embeddings().weight.requires_grad
    # The adapted LM is still the HF model (generate, the pre-hook): its forward matches head 1.
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(model.lm(ids).logits, outputs(model, ids)[0][0], rtol=0, atol=1e-5)


def test_round_trip_restores_every_adapter_exactly(saved):
    model, directory = saved
    files = {p.name for p in directory.iterdir()}
    assert {LORA_CONFIG_FILE, LORA_WEIGHTS_FILE, "model.safetensors", MTP_CONFIG_FILE} <= files
    # The HF files hold the base weights under their usual names.
    assert not [k for k in load_file(directory / "model.safetensors") if "lora" in k or "base_layer" in k]
    cfg = json.loads((directory / LORA_CONFIG_FILE).read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (4, 8, 0.0)
    assert cfg["adapted_modules"] == adapted_modules(model)

    loaded = MTPModel.from_pretrained(directory).eval()
    assert adapted_modules(loaded) == adapted_modules(model)
    assert any(".mlp." in n for n in adapted_modules(loaded))
    want, got = adapter_state(model), adapter_state(loaded)
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}
    ids = batch()
    (a_logits, a_trunk), (b_logits, b_trunk) = outputs(model, ids), outputs(loaded, ids)
    assert torch.equal(a_trunk, b_trunk)
    for a, b in zip(a_logits, b_logits):
        assert torch.equal(a, b)
    assert torch.equal(model.values(model(ids)), loaded.values(loaded(ids)))


def test_missing_or_unexpected_adapter_key_fails_naming_the_file(saved, tmp_path):
    _, directory = saved
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    state = load_file(broken / LORA_WEIGHTS_FILE)
    key = "extra_heads.1.mlp.down_proj.lora_B.weight"  # an FFN adapter of the last head
    value = state.pop(key)
    save_file(state, broken / LORA_WEIGHTS_FILE)
    with pytest.raises(WMTPError, match=f"{LORA_WEIGHTS_FILE}.*missing.*{key}"):
        MTPModel.from_pretrained(broken)
    save_file({**state, key: value, "extra_heads.1.mlp.extra.lora_A.weight": value.clone()}, broken / LORA_WEIGHTS_FILE)
    with pytest.raises(WMTPError, match=f"{LORA_WEIGHTS_FILE}.*unexpected.*mlp.extra"):
        MTPModel.from_pretrained(broken)
    # Targets narrowed on disk (the bug this replaces: attention-only targets on load) fail too.
    cfg = json.loads((directory / LORA_CONFIG_FILE).read_text())
    cfg["adapted_modules"] = [m for m in cfg["adapted_modules"] if ".mlp." not in m]
    (broken / LORA_CONFIG_FILE).write_text(json.dumps(cfg))
    shutil.copy(directory / LORA_WEIGHTS_FILE, broken / LORA_WEIGHTS_FILE)
    with pytest.raises(WMTPError, match=f"{LORA_WEIGHTS_FILE}.*unexpected.*mlp"):
        MTPModel.from_pretrained(broken)
    (broken / LORA_CONFIG_FILE).unlink()  # still declared in mtp_config.json
    with pytest.raises(WMTPError, match=LORA_CONFIG_FILE):
        MTPModel.from_pretrained(broken)


def test_merged_export_is_the_adapted_model(saved, tmp_path):
    from transformers import AutoModelForCausalLM

    from weighted_mtp.eval.run import _load_model

    model, directory = saved
    ids = batch()
    logits, _ = outputs(model, ids)
    assert main(["export", str(directory), str(tmp_path / "merged"), "--merge"]) == 0
    merged_dir = tmp_path / "merged"
    assert not (merged_dir / LORA_CONFIG_FILE).exists() and not (merged_dir / LORA_WEIGHTS_FILE).exists()
    assert (merged_dir / "tokenizer.json").is_file()
    hf = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, logits[0], rtol=0, atol=1e-5)
    merged = MTPModel.from_pretrained(merged_dir).eval()
    assert merged.lora is None and merged.value_head is not None
    for a, b in zip(outputs(merged, ids)[0], logits):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # Without --merge: a copy with the adapters kept, restored exactly.
    assert main(["export", str(directory), str(tmp_path / "copy")]) == 0
    copy = MTPModel.from_pretrained(tmp_path / "copy").eval()
    for a, b in zip(outputs(copy, ids)[0], logits):
        assert torch.equal(a, b)
    # Evaluation of the LoRA checkpoint itself merges on load.
    evaluated, tokenizer = _load_model(directory)
    with torch.no_grad():
        torch.testing.assert_close(evaluated(ids).logits, logits[0], rtol=0, atol=1e-5)
    assert tokenizer is not None
    assert main(["export", str(directory), str(tmp_path / "merged"), "--merge"]) == 2  # never overwrites


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_other_architectures_round_trip_and_merge(arch, tmp_path):
    """GPT-2's fused Conv1D projections (stored transposed) and Qwen2's biased q/k/v."""
    model = MTPModel(make_lm(arch), n_future_tokens=2)
    model.add_lora(LORA)
    randomize_adapters(model, std=0.2)
    model.eval()
    assert any(".mlp." in n for n in adapted_modules(model))
    assert any(n.startswith("extra_heads.0.") for n in adapted_modules(model))
    ids = batch(vocab=61)
    logits, _ = outputs(model, ids)
    model.save_pretrained(tmp_path / "lora")
    loaded = MTPModel.from_pretrained(tmp_path / "lora").eval()
    for a, b in zip(outputs(loaded, ids)[0], logits):
        assert torch.equal(a, b)
    loaded.merge_lora()
    assert loaded.lora is None and not adapted_modules(loaded)
    assert all(p.requires_grad for p in loaded.parameters())
    for a, b in zip(outputs(loaded, ids)[0], logits):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_training_moves_only_adapters_and_resumes(micro_model_dir, tmp_path):
    # 4 steps an epoch, so a checkpoint at step 2 to resume from.
    cfg = load_config(REPO / "configs" / "baseline" / "baseline.yaml", tiny_training_overrides(**{
        "training.max_steps": 3, "training.use_lora": "true", "training.lora.rank": 4, "training.batch_size": 2,
        "data_sampling.policy_data": "rows", "data_sampling.n_samples": 8, "dataset.max_length": 64, "checkpoint.save_checkpoint_every": 0.5,
        "training.eval_every": 0, "data_sampling.val_n_samples": 0, "models.policy.n_future_tokens": 2}))
    initial = MTPModel.from_pretrained(micro_model_dir, n_future_tokens=cfg.models.policy.n_future_tokens)
    run_dir = tmp_path / "run"
    result = train(cfg, run_dir, show_progress=False)
    assert result.steps == 3
    final = MTPModel.from_pretrained(run_dir / "final")
    assert final.lora is not None and final.lora["r"] == 4
    with base_layers(final):
        base = dict(final.named_parameters())
    for name, param in initial.named_parameters():
        assert torch.equal(base[name], param), f"{name}: a base weight moved"
    lora_b = {k: v for k, v in adapter_state(final).items() if ".lora_B." in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # B starts at zero: every adapter trained

    step2 = run_dir / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(2)
    assert MTPModel.from_pretrained(step2 / ckpt.MODEL_SUBDIR).lora is not None
    resumed = tmp_path / "resumed"
    shutil.copytree(step2, resumed / ckpt.CHECKPOINT_DIR / step2.name)
    assert train(cfg, resumed, resume=True, show_progress=False).steps == 3
    again = MTPModel.from_pretrained(resumed / "final")
    got = dict(again.named_parameters())
    for name, param in final.named_parameters():
        assert torch.equal(got[name], param), name
