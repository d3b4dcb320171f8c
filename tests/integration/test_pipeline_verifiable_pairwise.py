"""One verifiable-WMTP step with the pairwise auxiliary loss, taken apart term by term.

(a) the policy loss takes no gradient from incorrect samples or from prompt targets;
(b) the value targets use reward 1 for correct and 0 for incorrect samples;
(c) each of the three loss terms alone changes exactly the parameters it should;
(d) the token weights carry no gradient."""

from __future__ import annotations

import pytest
import torch

from conftest import REPO, tiny_training_overrides
from weighted_mtp.config import load_config
from weighted_mtp.data.collate import PairwiseCollator
from weighted_mtp.models.hf_layout import find_layout
from weighted_mtp.objectives import verifiable as verifiable_module
from weighted_mtp.objectives.verifiable import VerifiableObjective
from weighted_mtp.training.data_feed import load_split
from weighted_mtp.training.loop import train

CONFIG = REPO / "configs" / "verifiable" / "verifiable_pairwise.yaml"


def _cfg(**extra):
    values = {"training.critic_mode": "shared", "training.use_pairwise": True, "training.dropout": 0.0,
              "data_sampling.pairwise.n_pairs": 4, "dataset.max_length": 160, **extra}
    return load_config(CONFIG, tiny_training_overrides(**values))


@pytest.fixture(scope="module")
def setup(micro_model_dir):
    cfg = _cfg()
    objective = VerifiableObjective(cfg)
    model, tokenizer, _ = objective.build_model()
    # A trained-looking value head: the zero-initialised last layer would give zero value grads
    # to everything before it.
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.value_head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pairs = load_split(cfg, "train", True, n=4).items
    batch = PairwiseCollator(tokenizer, cfg.dataset.max_length)(pairs)
    batch.pop("n_truncated")
    return cfg, model, batch


def _grads(model, cfg, batch, *, spy=None) -> dict[str, torch.Tensor]:
    """Gradients of one objective call, keyed by parameter name; missing = no gradient path."""
    objective = VerifiableObjective(cfg)
    model.zero_grad(set_to_none=True)
    out = objective(model, batch, training=True)
    out.loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _groups(model) -> dict[str, set[str]]:
    names = {n for n, _ in model.named_parameters()}
    last_ids = {id(p) for p in find_layout(model.lm).layers[-1].parameters()}
    last = {n for n, p in model.named_parameters() if id(p) in last_ids}  # head 1
    value = {n for n in names if n.startswith("value_head.")}
    extra = {n for n in names if n.startswith("extra_heads.")}  # heads 2..K
    # The micro model ties the unembedding to the token embedding: then it is trunk too.
    unembed = {n for n, p in model.named_parameters() if p is model.unembedding.weight}
    return {"value_head": value, "heads": extra | last, "unembedding": unembed,
            "trunk": names - value - extra - last}


def _moved(grads: dict, names: set[str]) -> bool:
    return any(n in grads and grads[n].abs().max() > 0 for n in names)


def test_a_policy_loss_ignores_incorrect_samples_and_prompt_targets(setup, monkeypatch):
    cfg, model, batch = setup
    cfg0 = _cfg(**{"training.value_coef": 0.0, "training.aux_coef": 0.0})
    captured = {}
    original = model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        for h in out.head_hidden:
            h.retain_grad()
        captured["out"] = out
        return out

    monkeypatch.setattr(model, "forward", forward)
    _grads(model, cfg0, batch)
    n = batch["pos_input_ids"].shape[0]
    labels = torch.cat([batch["pos_labels"], batch["neg_labels"]])
    S = labels.shape[1]
    for k, h in enumerate(captured["out"].head_hidden, start=1):
        g = h.grad.abs().sum(-1)  # [2n, S]
        assert torch.all(g[n:] == 0), f"head {k}: incorrect samples leak gradient into the policy loss"
        # Head k at position t predicts token t+k: a gradient only where that target is a response token.
        has_target = torch.zeros_like(labels, dtype=torch.bool)
        has_target[:, : S - k] = labels[:, k:] != -100
        assert torch.all(g[:n][~has_target[:n]] == 0), f"head {k}: prompt/padding targets get gradient"
        assert torch.all(g[:n][has_target[:n]] > 0), f"head {k}: a response target got no gradient"


def test_b_value_targets_use_reward_one_and_zero(setup, monkeypatch):
    cfg, model, batch = setup
    seen = {}
    original = verifiable_module.lambda_returns

    def spy(values, rewards, mask, gamma, lam):
        targets = original(values, rewards, mask, gamma, lam)
        seen.update(rewards=rewards.clone(), targets=targets.clone(), mask=mask.clone())
        return targets

    monkeypatch.setattr(verifiable_module, "lambda_returns", spy)
    # gamma = lambda = 1: the TD(lambda) target of every response token is the terminal reward.
    _grads(model, _cfg(**{"training.td_lambda": 1.0, "training.td_gamma": 1.0}), batch)
    n = batch["pos_input_ids"].shape[0]
    assert seen["rewards"].tolist() == [1.0] * n + [0.0] * n
    mask, targets = seen["mask"], seen["targets"]
    assert torch.allclose(targets[:n][mask[:n]], torch.ones(()))
    assert torch.allclose(targets[n:][mask[n:]], torch.zeros(()))


@pytest.mark.parametrize("term", ["policy", "value", "pairwise"])
def test_c_each_term_alone_changes_the_parameters_it_should(setup, term):
    cfg, model, batch = setup
    coefs = {"policy": (0.0, 0.0), "value": (1.0, 0.0), "pairwise": (0.0, 1.0)}
    base = _grads(model, _cfg(**{"training.value_coef": 0.0, "training.aux_coef": 0.0}), batch)
    if term == "policy":
        grads = base
    else:  # the term's own gradient: the objective is linear in its coefficients
        v, a = coefs[term]
        full = _grads(model, _cfg(**{"training.value_coef": v, "training.aux_coef": a}), batch)
        grads = {n: full[n] - base.get(n, torch.zeros_like(full[n])) for n in full}
    groups = _groups(model)
    if term == "policy":
        assert _moved(grads, groups["heads"]) and _moved(grads, groups["unembedding"]) and _moved(grads, groups["trunk"])
        assert not _moved(grads, groups["value_head"])
    else:
        assert _moved(grads, groups["value_head"]) and _moved(grads, groups["trunk"])
        assert not _moved(grads, groups["heads"])  # no policy head: the value head reads the trunk


def test_d_weights_carry_no_gradient(setup, monkeypatch):
    cfg, model, batch = setup
    seen = []
    original = verifiable_module.weighted_policy_loss

    def spy(model, head_hidden, labels, weights, loss_cfg):
        seen.append(weights)
        return original(model, head_hidden, labels, weights, loss_cfg)

    monkeypatch.setattr(verifiable_module, "weighted_policy_loss", spy)
    _grads(model, cfg, batch)
    (weights,) = seen
    assert not weights.requires_grad and weights.grad_fn is None
    n = batch["pos_input_ids"].shape[0]
    assert weights.shape == batch["pos_labels"].shape
    assert torch.all(weights[batch["pos_labels"] == -100] == 0)
    assert weights[batch["pos_labels"] != -100].std() > 0  # real critic weights, not a uniform stand-in
    assert n == 4


def test_one_loop_step_with_a_trainable_separate_critic(tmp_path, micro_model_dir):
    """Stage 1 -> stage 2 through the loop: the separate critic's value head keeps learning,
    its backbone does not, and the policy trains."""
    critic_run = tmp_path / "critic"
    critic_cfg = load_config(REPO / "configs" / "critic" / "critic_pairwise.yaml", tiny_training_overrides(**{
        "training.max_steps": 1, "data_sampling.pairwise.n_pairs": 4, "data_sampling.pairwise.val_n_pairs": 4,
        "data_sampling.train_eval_n_samples": 0}))
    train(critic_cfg, critic_run, show_progress=False)
    cfg = load_config(CONFIG, tiny_training_overrides(**{
        "models.critic.path": critic_run / "final", "training.max_steps": 2, "data_sampling.pairwise.n_pairs": 8,
        "training.value_head_learning_rate": 1e-2}))
    result = train(cfg, tmp_path / "verifiable", show_progress=False)
    assert result.steps == 2
    for key in ("train/policy_loss", "train/value_loss", "train/pairwise_loss", "train/pairwise_accuracy",
                "train/weight/mean", "train/weight/p95", "train/weight/fraction_clipped", "train/weight/delta_mean",
                "train/weight/effective_tokens", "train/weighted_unweighted_ratio"):
        assert key in result.last_train, key
    assert "val/ce_head4" in result.last_val and "val/loss" in result.last_val
    state = torch.load(sorted((tmp_path / "verifiable" / "checkpoints").glob("step_*"))[-1] / "trainer_state.pt",
                       weights_only=False)
    from weighted_mtp.models.critic import CriticModel

    before = CriticModel.from_pretrained(critic_run / "final").value_head.state_dict()
    after = state["objective"]["critic_value_head"]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the critic head learned in stage 2
