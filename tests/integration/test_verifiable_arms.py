"""The critic-weighted arm and its matched controls through the loop, on one trained critic:
each trains, the controls match the critic weights' statistics, validation leaves the training
state alone, and a resumed run (whitening statistics, random stream, learning critic head)
ends identical to an uninterrupted one."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import REPO, tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.data.collate import PairwiseCollator, SFTCollator
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.objectives.verifiable import VerifiableObjective
from weighted_mtp.training import checkpoint as ckpt
from weighted_mtp.training.data_feed import load_split
from weighted_mtp.training.loop import train

CONFIGS = REPO / "configs"


@pytest.fixture(scope="module")
def critic_dir(micro_model_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("critic") / "run"
    cfg = load_config(CONFIGS / "critic" / "critic_pairwise.yaml", tiny_training_overrides(**{
        "training.max_steps": 2, "data_sampling.pairwise.n_pairs": 8, "data_sampling.pairwise.val_n_pairs": 4,
        "data_sampling.train_eval_n_samples": 0, "training.value_head_learning_rate": 5e-2}))
    train(cfg, run, show_progress=False)
    return run / "final"


def _cfg(config, critic_dir, **extra):
    return load_config(config, tiny_training_overrides(**{
        "models.critic.path": critic_dir, "data_sampling.pairwise.n_pairs": 8, "dataset.max_length": 160, **extra}))


@pytest.mark.parametrize("config", ["verifiable/verifiable.yaml", "controls/random_matched.yaml",
                                    "controls/shuffled.yaml"])
def test_arm_trains_with_its_weights(config, critic_dir, tmp_path):
    cfg = _cfg(CONFIGS / config, critic_dir, **{"training.max_steps": 2})
    result = train(cfg, tmp_path / "run", show_progress=False)
    m = result.last_train
    assert result.steps == 2 and "val/ce_head4" in result.last_val
    assert m["train/weight/nan_weights"] == 0 and m["train/weight/std"] > 0
    if "random_matched" in config:  # standardised to this batch's critic weights
        assert m["train/weight/mean"] == pytest.approx(m["train/weight/target_mean"], rel=0.05)
        assert m["train/weight/std"] == pytest.approx(m["train/weight/target_std"], rel=0.05)
    else:  # critic weights, or the same weights permuted: within the clip range
        assert 0.1 - 1e-6 <= m["train/weight/p25"] and m["train/weight/max"] <= 3.0 + 1e-6


def test_validation_leaves_whitening_statistics_and_random_stream_alone(critic_dir):
    cfg = _cfg(CONFIGS / "controls" / "random_matched.yaml", critic_dir)
    objective = VerifiableObjective(cfg)
    model, tokenizer, _ = objective.build_model()
    train_batch = PairwiseCollator(tokenizer, 160)(load_split(cfg, "train", True, n=4).items)
    val_pairs = load_split(cfg, "validation", True, n=4).items
    val_batch = PairwiseCollator(tokenizer, 160)(val_pairs)
    objective(model, train_batch, training=True)
    stats, stream = objective.stats.state_dict(), objective.generator.get_state()
    assert stats["count"] == 1
    with torch.no_grad():
        out = objective(model, val_batch, training=False)
        sft = objective(model, SFTCollator(tokenizer, 160)([p for p, _ in val_pairs]), training=False)
    assert objective.stats.state_dict() == stats
    assert torch.equal(objective.generator.get_state(), stream)
    # validation on pairs: the policy's CE on the correct side (as an SFT batch of those rows gives)
    # and the critic on held-out pairs, from per-pair samples
    assert float(out.sums["loss"][0]) == pytest.approx(float(sft.sums["loss"][0]), rel=1e-5)
    metrics = objective.validation_metrics(out.samples, None)
    p, n = out.samples["seq_pos"], out.samples["seq_neg"]
    assert metrics["pairwise_accuracy"] == pytest.approx(float(((p > n).float() + 0.5 * (p == n).float()).mean()))
    assert metrics["pairwise_margin"] == pytest.approx(float(p.mean() - n.mean()), abs=1e-6)
    pos = out.samples["sq_pos"].sum() / out.samples["n_pos"].sum()
    neg = out.samples["sq_neg"].sum() / out.samples["n_neg"].sum()
    assert metrics["value_loss"] == pytest.approx(float(pos + neg) / 2, rel=1e-6)


def test_resume_is_exact_with_learning_critic_and_random_weights(critic_dir, tmp_path):
    cfg = _cfg(CONFIGS / "controls" / "random_matched.yaml", critic_dir, **{
        "training.max_steps": 4, "training.critic_trainable": True, "training.use_pairwise": True,
        "training.aux_coef": 0.1, "training.value_head_learning_rate": 1e-2})
    full = tmp_path / "full"
    train(cfg, full, show_progress=False)
    step2 = full / "checkpoints" / ckpt.checkpoint_name(2)
    resumed = tmp_path / "resumed"
    shutil.copytree(step2, resumed / "checkpoints" / step2.name)
    train(cfg, resumed, resume=True, show_progress=False)
    a, b = MTPModel.from_pretrained(full / "final"), MTPModel.from_pretrained(resumed / "final")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    sa = ckpt.load_trainer_state(ckpt.latest_checkpoint(full))["objective"]
    sb = ckpt.load_trainer_state(ckpt.latest_checkpoint(resumed))["objective"]
    assert sa["stats"] == sb["stats"] and sa["stats"]["count"] == 4
    for key, value in sa["critic_value_head"].items():
        assert torch.equal(value, sb["critic_value_head"][key]), key
