"""Parameter groups and the learning-rate schedule, against hand-computed values."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from weighted_mtp.config.schema import TrainingConfig
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.training.optim import build_optimizer, build_scheduler, lr_multiplier, parameter_groups


def test_lr_multiplier_hand_values():
    # 10 steps, 2 warmup: 0.5, 1.0, then cosine from 1 to 0.1 over the remaining 8 steps.
    assert lr_multiplier(0, 10, 2, "cosine", 0.1) == pytest.approx(0.5)
    assert lr_multiplier(1, 10, 2, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_multiplier(2, 10, 2, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_multiplier(6, 10, 2, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(10, 10, 2, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(6, 10, 2, "linear", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(9, 10, 0, "constant", 0.0) == 1.0


def _tiny_mtp():
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                      intermediate_size=64, vocab_size=50, tie_word_embeddings=True))
    return MTPModel(lm, 3)


def test_groups_split_trunk_heads_and_decay():
    model = _tiny_mtp()
    cfg = TrainingConfig(learning_rate=1e-3, trunk_learning_rate=1e-4, heads_learning_rate=5e-3, weight_decay=0.1)
    groups = {g["name"]: g for g in parameter_groups(model, cfg)}
    assert set(groups) == {"trunk", "trunk_no_decay", "heads", "heads_no_decay"}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    last_block = model.lm.model.layers[-1]
    assert id(last_block.self_attn.q_proj.weight) in ids["heads"]  # head 1 is a head
    assert id(model.extra_heads[1].mlp.up_proj.weight) in ids["heads"]
    assert id(model.lm.model.layers[0].self_attn.q_proj.weight) in ids["trunk"]
    assert id(model.lm.model.norm.weight) in ids["trunk_no_decay"]
    assert id(model.extra_heads[0].input_layernorm.weight) in ids["heads_no_decay"]
    assert groups["trunk"]["lr"] == 1e-4 and groups["heads"]["lr"] == 5e-3
    assert groups["trunk_no_decay"]["weight_decay"] == 0.0 and groups["heads"]["weight_decay"] == 0.1
    # Every trainable parameter exactly once (tied embedding/unembedding counted once).
    all_ids = [i for s in ids.values() for i in s]
    assert len(all_ids) == len(set(all_ids)) == len({id(p) for p in model.parameters()})


def test_frozen_parameters_are_left_out_and_objective_params_get_a_group():
    model = _tiny_mtp()
    model.lm.model.embed_tokens.weight.requires_grad_(False)
    extra = [torch.nn.Parameter(torch.zeros(3))]
    groups = {g["name"]: g for g in parameter_groups(model, TrainingConfig(), extra)}
    assert all(p.requires_grad for g in groups.values() for p in g["params"])
    assert groups["objective_no_decay"]["params"] == extra


def test_scheduler_drives_each_group_from_its_own_base_lr():
    model = _tiny_mtp()
    cfg = TrainingConfig(learning_rate=1e-3, heads_learning_rate=4e-3)
    cfg.lr_scheduler.warmup_ratio, cfg.lr_scheduler.min_lr_ratio = 0.0, 0.0
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=4)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["heads"] == pytest.approx(4e-3) and lrs["trunk"] == pytest.approx(1e-3)
    for _ in range(2):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["heads"] == pytest.approx(4e-3 * 0.5) and lrs["trunk"] == pytest.approx(1e-3 * 0.5)


def test_zero_learning_rate_is_kept_not_replaced_by_the_default():
    groups = {g["name"]: g for g in parameter_groups(_tiny_mtp(), TrainingConfig(learning_rate=1e-3, trunk_learning_rate=0.0))}
    assert groups["trunk"]["lr"] == 0.0 and groups["heads"]["lr"] == 1e-3
