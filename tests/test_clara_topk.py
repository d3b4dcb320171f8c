"""CLaRa's straight-through top-k: exact hard selection forward, masked-softmax gradients backward."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.clara.topk import differentiable_topk, select, topk_indices


def paper_topk(scores, k, tau):
    """A literal transcription of the paper's code version (Algorithm 1), one row at a time:
    s/tau first, then the log-mask of already-taken items; Z = Z_hard + Z_soft - SG(Z_soft)."""
    rows = []
    for b in range(scores.shape[0]):
        s = scores[b] / max(tau, 1e-6)
        order = sorted(range(s.shape[0]), key=lambda i: -float(s[i].detach()))[:k]
        taken = torch.zeros_like(s)
        z_hard, z_soft = [], []
        for j in range(k):
            onehot = torch.zeros_like(s)
            onehot[order[j]] = 1.0
            z_hard.append(onehot)
            z_soft.append(torch.softmax(s + torch.log(1 - taken.detach() + 1e-8), dim=-1))
            taken = torch.minimum(taken + onehot, torch.ones_like(taken))
        z_hard, z_soft = torch.stack(z_hard), torch.stack(z_soft)
        rows.append(z_hard + z_soft - z_soft.detach())
    return torch.stack(rows)


def test_forward_is_exactly_the_hard_topk_in_rank_order():
    torch.manual_seed(0)
    scores = torch.randn(5, 9)
    z = differentiable_topk(scores.clone().requires_grad_(), 4, 0.02)
    assert z.shape == (5, 4, 9)
    assert set(z.detach().unique().tolist()) == {0.0, 1.0}  # exact, not 1 - 1e-7
    assert torch.equal(z.detach().sum(-1), torch.ones(5, 4))
    idx = topk_indices(z)
    assert idx.dtype == torch.long
    assert torch.equal(idx, scores.topk(4, dim=-1).indices)
    assert all(len(set(row.tolist())) == 4 for row in idx)


@pytest.mark.parametrize("tau", [1e-3, 0.02, 1.0, 50.0])
def test_forward_exact_for_any_tau_and_float_width(tau):
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        scores = torch.randn(3, 7, dtype=torch.float64).to(dtype)
        z = differentiable_topk(scores.requires_grad_(), 3, tau).detach()
        assert ((z == 0) | (z == 1)).all(), dtype


def test_selected_memory_equals_the_gathered_documents():
    torch.manual_seed(1)
    scores, memory = torch.randn(3, 6), torch.randn(3, 6, 2, 5)
    z = differentiable_topk(scores, 2, 0.02)
    picked = select(z, memory)
    idx = scores.topk(2, dim=-1).indices
    assert picked.shape == (3, 2, 2, 5)
    for b in range(3):
        for j in range(2):
            assert torch.equal(picked[b, j], memory[b, idx[b, j]])


def test_unselected_candidates_get_a_score_gradient():
    torch.manual_seed(2)
    scores = torch.randn(2, 6, requires_grad=True)
    memory = torch.randn(2, 6, 3, 4)
    loss = (select(differentiable_topk(scores, 2, 0.5), memory) * torch.randn(2, 2, 3, 4)).sum()
    loss.backward()
    idx = scores.detach().topk(2, dim=-1).indices
    for b in range(2):
        unselected = [i for i in range(6) if i not in idx[b].tolist()]
        assert all(scores.grad[b, i].abs() > 1e-6 for i in unselected)


def test_k_equal_d_is_a_permutation():
    scores = torch.tensor([[0.3, -1.0, 2.0, 0.1], [5.0, 4.0, 3.0, 2.0]])
    z = differentiable_topk(scores, 4, 0.02).detach()
    for b in range(2):
        assert torch.equal(z[b].sum(0), torch.ones(4)) and torch.equal(z[b].sum(1), torch.ones(4))
    assert topk_indices(z).tolist() == [[2, 0, 3, 1], [0, 1, 2, 3]]


def test_hand_computed_gradient_one_slot():
    """B=1, D=3, k=1, tau=1, s = log([1, 2, 1]) so p = softmax(s) = [1/4, 1/2, 1/4]. For
    L = sum(w * Z[0, 0, :]) with w = [1, 0, 4]: dL/ds_i = p_i (w_i - p.w), p.w = 5/4, so
    dL/ds = [1/4 * -1/4, 1/2 * -5/4, 1/4 * 11/4] = [-1/16, -5/8, 11/16]."""
    scores = torch.log(torch.tensor([[1.0, 2.0, 1.0]], dtype=torch.float64)).requires_grad_()
    z = differentiable_topk(scores, 1, 1.0)
    assert z.detach().tolist() == [[[0.0, 1.0, 0.0]]]
    (torch.tensor([1.0, 0.0, 4.0], dtype=torch.float64) * z[0, 0]).sum().backward()
    assert torch.allclose(scores.grad, torch.tensor([[-1 / 16, -5 / 8, 11 / 16]], dtype=torch.float64), atol=1e-7)


def test_second_slot_gradient_ignores_the_taken_item():
    """Slot 2's soft row is a softmax over the items slot 1 did not take: its gradient w.r.t. the
    taken item's score is ~0 (the log-mask adds log(1e-8)), unlike an unmasked softmax."""
    scores = torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    z = differentiable_topk(scores, 2, 1.0)
    z[0, 1, 1].backward()
    p = torch.softmax(torch.tensor([1.0, 0.0], dtype=torch.float64), -1).tolist()  # over items 1 and 2
    assert abs(scores.grad[0, 0].item()) < 1e-6
    assert scores.grad[0, 1].item() == pytest.approx(p[0] * (1 - p[0]), abs=1e-6)
    assert scores.grad[0, 2].item() == pytest.approx(-p[0] * p[1], abs=1e-6)


@pytest.mark.parametrize("tau", [0.02, 0.3, 2.0])
def test_matches_the_paper_code_version_with_tau(tau):
    torch.manual_seed(3)
    base = torch.randn(4, 6, dtype=torch.float64) * 0.2
    weights = torch.randn(4, 2, 6, dtype=torch.float64)
    grads = []
    for fn in (differentiable_topk, paper_topk):
        scores = base.clone().requires_grad_()
        z = fn(scores, 2, tau)
        (weights * z).sum().backward()
        grads.append((z.detach(), scores.grad))
    assert torch.allclose(grads[0][0], grads[1][0])
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-10)
    # tau really scales the scores before the softmax: another tau gives another gradient
    scores = base.clone().requires_grad_()
    (weights * differentiable_topk(scores, 2, tau * 3)).sum().backward()
    assert not torch.allclose(scores.grad, grads[0][1], atol=1e-6)


def test_tau_divides_before_the_log_mask():
    """Dividing after (eq. 3.3 as printed) would scale log(1e-8) by 1/tau too; with tau = 100 the
    taken item would then keep a real share of slot 2. The code version gives it ~0."""
    scores = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    z = differentiable_topk(scores, 2, 100.0)
    z[0, 1, 0].backward()  # slot 2's weight on the item slot 1 took
    assert abs(scores.grad[0, 0].item()) < 1e-6


def test_bad_shapes_and_k_name_the_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        differentiable_topk(torch.zeros(2, 3, 4), 1, 0.1)
    with pytest.raises(ValueError, match=r"k=4 .*\(2, 3\)"):
        differentiable_topk(torch.zeros(2, 3), 4, 0.1)
    with pytest.raises(ValueError, match="k=0"):
        differentiable_topk(torch.zeros(2, 3), 0, 0.1)
    with pytest.raises(ValueError, match="tau"):
        differentiable_topk(torch.zeros(2, 3), 1, -1.0)
    z = differentiable_topk(torch.zeros(2, 3), 1, 0.1)
    with pytest.raises(ValueError, match=r"Z \(2, 1, 3\) and memory \(2, 4, 1, 5\)"):
        select(z, torch.zeros(2, 4, 1, 5))
    with pytest.raises(ValueError, match=r"memory \(2, 3, 5\)"):
        select(z, torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        topk_indices(torch.zeros(2, 3))
