"""The whole pipeline on tiny random Llama, Qwen2, Mistral and GPT-2 models: the verifiable
objective with K=3 MTP heads and a value head on the policy trunk (critic_mode shared, critic
weighting) trains through the one loop, every head and the value head learn, and the export
reloads with its heads and value head."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import REPO, tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.training.loop import train

VERIFIABLE = REPO / "configs" / "verifiable" / "verifiable.yaml"
ARCHS = ["llama", "qwen2", "mistral", "gpt2"]
K = 3
MAX_LENGTH = 96


def _config(arch: str, tokenizer):
    import transformers as tf

    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, **ids)
    if arch == "llama":  # tied embeddings, like the embedded micro model
        return tf.LlamaConfig(**common, tie_word_embeddings=True), tf.LlamaForCausalLM
    if arch == "qwen2":  # q/k/v biases
        return tf.Qwen2Config(**common), tf.Qwen2ForCausalLM
    if arch == "mistral":  # a sliding window shorter than the rows
        return tf.MistralConfig(**common, sliding_window=16), tf.MistralForCausalLM
    if arch == "gpt2":  # learned positions, LayerNorm, blocks called with positional arguments
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids), tf.GPT2LMHeadModel
    raise ValueError(arch)


@pytest.fixture(scope="module")
def micro_tokenizer(micro_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model_dir)


@pytest.mark.parametrize("arch", ARCHS)
def test_verifiable_shared_critic_trains_and_exports(arch, micro_tokenizer, tmp_path, monkeypatch):
    config, cls = _config(arch, micro_tokenizer)
    torch.manual_seed(0)
    model_dir = tmp_path / arch
    cls(config).save_pretrained(model_dir)
    micro_tokenizer.save_pretrained(model_dir)

    # The heads as they start: extra heads are copies of the last block, the value head is
    # attached (randomly initialised) inside train(); record both at that moment.
    initial: dict[str, dict[str, torch.Tensor]] = {}
    attach = MTPModel.attach_value_head

    def recording_attach(self, *args, **kwargs):
        attach(self, *args, **kwargs)
        initial["value_head"] = {k: v.detach().clone() for k, v in self.value_head.state_dict().items()}
        initial["extra_heads"] = {k: v.detach().clone() for k, v in self.extra_heads.state_dict().items()}

    monkeypatch.setattr(MTPModel, "attach_value_head", recording_attach)

    cfg = load_config(VERIFIABLE, tiny_training_overrides(**{
        "models.policy.path": str(model_dir),
        "models.policy.n_future_tokens": K,
        "training.critic_mode": "shared",
        "training.weighting.scheme": "critic",
        "training.weighting.stats_warmup_steps": 0,
        "training.max_steps": 2,
        "training.batch_size": 2,
        "training.eval_every": 0,
        "data_sampling.n_samples": 8,
        "data_sampling.pairwise.n_pairs": 8,
        "data_sampling.val_n_samples": 2,
        "dataset.max_length": MAX_LENGTH,
        "checkpoint.save_checkpoint_every": 0,
        "checkpoint.save_best": False,
    }))
    result = train(cfg, tmp_path / "run", show_progress=False)

    assert result.steps == 2
    assert math.isfinite(result.last_train["train/loss"])
    assert math.isfinite(result.last_train["train/value_loss"])
    assert initial, "train() did not attach a value head (critic_mode shared)"

    loaded = MTPModel.from_pretrained(result.final_dir)
    assert type(loaded.lm) is cls
    assert loaded.n_future_tokens == K and len(loaded.extra_heads) == K - 1
    assert loaded.value_head is not None
    for group, module in (("extra_heads", loaded.extra_heads), ("value_head", loaded.value_head)):
        state = module.state_dict()
        assert state.keys() == initial[group].keys()
        moved = [k for k in state if not torch.equal(state[k], initial[group][k])]
        assert moved, f"no {group} parameter changed"
    for j in range(K - 1):  # every extra head learned, not just one of them
        prefix = f"{j}."
        assert any(not torch.equal(v, initial["extra_heads"][k]) for k, v in loaded.extra_heads.state_dict().items()
                   if k.startswith(prefix)), f"extra head {j + 2} did not change"

    ids = torch.tensor([micro_tokenizer("def f(x):\n    return x")["input_ids"]])
    with torch.no_grad():
        out = loaded(ids, torch.ones_like(ids))
        values = loaded.values(out)
    assert len(out.head_hidden) == K
    assert values.shape == ids.shape and torch.isfinite(values).all()
