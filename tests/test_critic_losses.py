"""Bradley-Terry and pointwise critic losses vs hand-computed numbers and naive loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.losses.critic_losses import bradley_terry_loss, pairwise_stats, pointwise_loss


def test_bradley_terry_hand():
    pos, neg = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.5])
    want = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2
    assert bradley_terry_loss(pos, neg).item() == pytest.approx(want, abs=1e-6)
    want_m = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(1.0))) / 2
    assert bradley_terry_loss(pos, neg, margin=0.5).item() == pytest.approx(want_m, abs=1e-6)


def test_bradley_terry_stable_and_gradient_sign():
    big = bradley_terry_loss(torch.tensor([-100.0]), torch.tensor([100.0]))
    assert big.item() == pytest.approx(200.0, rel=1e-6)  # no inf from exp overflow
    pos = torch.tensor([0.3, -0.2], requires_grad=True)
    neg = torch.tensor([0.1, 0.4], requires_grad=True)
    bradley_terry_loss(pos, neg).backward()
    assert (pos.grad < 0).all() and (neg.grad > 0).all()  # raising pos lowers the loss


def test_pairwise_stats():
    st = pairwise_stats(torch.tensor([1.0, 0.0, 2.0, 0.3]), torch.tensor([0.0, 0.5, 2.0, 0.3]))
    assert st["pairwise_accuracy"].item() == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert st["mean_pos"].item() == pytest.approx(3.3 / 4)
    assert st["mean_neg"].item() == pytest.approx(2.8 / 4)
    assert st["margin"].item() == pytest.approx(0.5 / 4)
    ties = pairwise_stats(torch.ones(3), torch.ones(3))
    assert ties["pairwise_accuracy"].item() == 0.5
    p = torch.ones(2, requires_grad=True)
    assert not pairwise_stats(p, torch.zeros(2))["margin"].requires_grad


def _naive_pointwise(values, mask, target, kind):
    per_seq = []
    for b in range(values.shape[0]):
        ls = []
        for t in range(values.shape[1]):
            if not mask[b, t]:
                continue
            v = float(values[b, t])
            y = float(target[b]) if target.dim() == 1 else float(target[b, t])
            if kind == "bce":
                ls.append(-(y * math.log(1 / (1 + math.exp(-v))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-v)))))
            else:
                ls.append((v - y) ** 2)
        if ls:
            per_seq.append(sum(ls) / len(ls))
    return sum(per_seq) / len(per_seq)


@pytest.mark.parametrize("kind", ["bce", "mse"])
@pytest.mark.parametrize("token_target", [False, True])
def test_pointwise_matches_naive(kind, token_target):
    g = torch.Generator().manual_seed(1)
    values = torch.randn(4, 10, generator=g)
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[0, 2:9] = True
    mask[2, 8:10] = True  # row 1 empty, row 3 short
    mask[3, 0:1] = True
    target = torch.rand(4, 10, generator=g) if token_target else torch.tensor([1.0, 0.0, 0.0, 1.0])
    got = pointwise_loss(values, mask, target, kind)
    assert got.item() == pytest.approx(_naive_pointwise(values, mask, target, kind), abs=1e-5)


def test_pointwise_per_sequence_weighting_and_garbage_padding():
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [3.0, float("nan"), 0, 0, 0, 0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    loss = pointwise_loss(values, mask, torch.tensor([0.0, 0.0]), "mse")
    assert loss.item() == pytest.approx((1.0 + 9.0) / 2)  # not (6*1 + 9) / 7
    loss.backward()
    assert torch.isfinite(values.grad).all()
    torch.testing.assert_close(values.grad[1], torch.tensor([3.0, 0, 0, 0, 0, 0]))  # d/dv 0.5*v^2
    bce = pointwise_loss(torch.zeros(1, 3), torch.ones(1, 3), torch.tensor([1.0]), "bce")
    assert bce.item() == pytest.approx(math.log(2))


def test_pointwise_all_empty_and_bad_kind():
    v = torch.randn(2, 3, requires_grad=True)
    out = pointwise_loss(v, torch.zeros(2, 3), torch.ones(2), "bce")
    assert out.item() == 0.0 and out.requires_grad
    with pytest.raises(ValueError, match="bce, mse"):
        pointwise_loss(v, torch.ones(2, 3), torch.ones(2), "hinge")
