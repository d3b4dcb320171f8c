"""The chunked, fused MTP loss must equal the naive full-logits reference, value and gradients."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.losses.fused_linear_ce import fused_linear_cross_entropy
from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
from weighted_mtp.losses.reference import naive_mtp_cross_entropy

B, S, D, V = 3, 11, 8, 13


def make_batch(K, dtype=torch.float64, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    hidden = [torch.randn(B, S, D, generator=g, dtype=dtype).requires_grad_() for _ in range(K)]
    weight = (torch.randn(V, D, generator=g, dtype=dtype) * 0.5).requires_grad_()
    b = (torch.randn(V, generator=g, dtype=dtype) * 0.1).requires_grad_() if bias else None
    labels = torch.randint(0, V, (B, S), generator=g)
    labels[0, :3] = -100  # prompt
    labels[1, :5] = -100  # longer prompt
    labels[2, -4:] = -100  # right padding
    labels[2, :1] = -100
    return hidden, weight, b, labels


def make_weights(kind, K, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    if kind is None:
        return None
    shape = (B, S) if kind == "bs" else (B, S, K)
    return torch.rand(shape, generator=g, dtype=dtype) * 2


def run(fn, hidden, weight, bias, labels, weights, **kw):
    for t in [*hidden, weight, bias]:
        if t is not None:
            t.grad = None
    out = fn(hidden, weight, labels, weights, unembed_bias=bias, **kw)
    out.loss.backward()
    grads = [None if t is None else (None if t.grad is None else t.grad.clone()) for t in [*hidden, weight, bias]]
    return out, grads


def assert_same(a, b, ga, gb, rtol, atol):
    torch.testing.assert_close(a.loss, b.loss, rtol=rtol, atol=atol)
    torch.testing.assert_close(a.per_head_ce, b.per_head_ce, rtol=rtol, atol=atol, equal_nan=True)
    torch.testing.assert_close(a.per_head_loss, b.per_head_loss, rtol=rtol, atol=atol, equal_nan=True)
    assert torch.equal(a.per_head_tokens, b.per_head_tokens)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("kind", [None, "bs", "bsk"])
@pytest.mark.parametrize("normalization", ["token_mean", "weight_mean"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_naive_float64(K, kind, normalization, use_bias):
    hidden, weight, bias, labels = make_batch(K, bias=use_bias)
    weights = make_weights(kind, K)
    a, ga = run(mtp_cross_entropy, hidden, weight, bias, labels, weights, normalization=normalization, chunk_size=7)
    b, gb = run(naive_mtp_cross_entropy, hidden, weight, bias, labels, weights, normalization=normalization)
    assert_same(a, b, ga, gb, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("normalization", ["token_mean", "weight_mean"])
def test_matches_naive_float32(K, normalization):
    hidden, weight, bias, labels = make_batch(K, dtype=torch.float32)
    weights = make_weights("bsk", K, dtype=torch.float32)
    a, ga = run(mtp_cross_entropy, hidden, weight, bias, labels, weights, normalization=normalization, chunk_size=7)
    b, gb = run(naive_mtp_cross_entropy, hidden, weight, bias, labels, weights, normalization=normalization)
    assert a.loss.dtype == torch.float32
    assert_same(a, b, ga, gb, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 5, 64, 10_000])
def test_chunk_size_does_not_change_result(chunk_size):
    hidden, weight, bias, labels = make_batch(2)
    a, ga = run(mtp_cross_entropy, hidden, weight, bias, labels, None, chunk_size=chunk_size)
    b, gb = run(naive_mtp_cross_entropy, hidden, weight, bias, labels, None)
    assert_same(a, b, ga, gb, rtol=1e-10, atol=1e-10)


def test_loss_is_mean_of_per_head_loss():
    hidden, weight, bias, labels = make_batch(4)
    out = mtp_cross_entropy(hidden, weight, labels, make_weights("bs", 4), unembed_bias=bias, chunk_size=7)
    torch.testing.assert_close(out.loss.float(), out.per_head_loss.nanmean())
    assert not out.per_head_ce.requires_grad and not out.per_head_loss.requires_grad


def _ce(logits, target):
    return math.log(sum(math.exp(x) for x in logits)) - logits[target]


def test_hand_computed_alignment():
    """Head k at position t must predict labels[t + k], weighted by the weight of token t + k."""
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # V=3, D=2
    h1 = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]]], dtype=torch.float64)
    h2 = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 2, 1]])
    ce_a = _ce([1, 2, 3], 2)  # head 1, t=0 -> token 1 (= 2), logits W @ (1, 2)
    ce_b = _ce([0, 1, 1], 1)  # head 1, t=1 -> token 2 (= 1)
    ce_c = _ce([2, 0, 2], 1)  # head 2, t=0 -> token 2 (= 1)

    out = mtp_cross_entropy([h1, h2], W, labels, chunk_size=2)
    assert out.loss.item() == pytest.approx(((ce_a + ce_b) / 2 + ce_c) / 2, rel=1e-12)
    assert out.per_head_tokens.tolist() == [2, 1]
    assert out.per_head_ce.tolist() == pytest.approx([(ce_a + ce_b) / 2, ce_c], rel=1e-6)

    w = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)  # weight of target token j
    tm = mtp_cross_entropy([h1, h2], W, labels, w, normalization="token_mean").loss.item()
    assert tm == pytest.approx(((2 * ce_a + 3 * ce_b) / 2 + 3 * ce_c) / 2, rel=1e-12)
    wm = mtp_cross_entropy([h1, h2], W, labels, w, normalization="weight_mean").loss.item()
    assert wm == pytest.approx(((2 * ce_a + 3 * ce_b) / 5 + ce_c) / 2, rel=1e-12)

    wk = torch.tensor([[[9.0, 9.0], [2.0, 9.0], [3.0, 5.0]]], dtype=torch.float64)  # [B, S, K]
    tk = mtp_cross_entropy([h1, h2], W, labels, wk).loss.item()
    assert tk == pytest.approx(((2 * ce_a + 3 * ce_b) / 2 + 5 * ce_c) / 2, rel=1e-12)


def test_doubling_one_token_weight_changes_loss_by_hand_computed_amount():
    K = 2
    hidden, weight, bias, labels = make_batch(K, bias=False)
    w = torch.ones(B, S, K, dtype=torch.float64)
    base = mtp_cross_entropy(hidden, weight, labels, w, chunk_size=7)
    b_, j = 0, 6  # token 6 of row 0 is a valid target of head 1 (predicted from position 5)
    assert labels[b_, j] != -100
    w2 = w.clone()
    w2[b_, j, 0] = 2.0
    new = mtp_cross_entropy(hidden, weight, labels, w2, chunk_size=7)
    with torch.no_grad():
        ce = F.cross_entropy(hidden[0][b_, j - 1] @ weight.T, labels[b_, j]).item()
    n1 = base.per_head_tokens[0].item()
    expected = ce / n1 / K  # token_mean: head 1's term gains one more CE, averaged over 2 heads
    assert (new.loss - base.loss).item() == pytest.approx(expected, rel=1e-10)
    assert new.loss.item() != base.loss.item()


def test_perfect_predictor_gives_zero_loss():
    Vp, K = 5, 2
    labels = torch.tensor([[-100, 3, 1, 4, 0, 2]])
    W = torch.eye(Vp, dtype=torch.float64) * 60.0
    hidden = []
    for k in range(1, K + 1):
        h = torch.zeros(1, labels.shape[1], Vp, dtype=torch.float64)
        for t in range(labels.shape[1] - k):
            if labels[0, t + k] >= 0:
                h[0, t, labels[0, t + k]] = 1.0
        hidden.append(h.requires_grad_())
    out = mtp_cross_entropy(hidden, W, labels, chunk_size=3)
    assert out.loss.item() < 1e-20
    out.loss.backward()


def test_frozen_unembedding_gives_correct_hidden_grads():
    hidden, weight, bias, labels = make_batch(2)
    weight.requires_grad_(False)
    bias.requires_grad_(False)
    a, ga = run(mtp_cross_entropy, hidden, weight, bias, labels, make_weights("bs", 2), chunk_size=7)
    b, gb = run(naive_mtp_cross_entropy, hidden, weight, bias, labels, make_weights("bs", 2))
    assert ga[-1] is None and ga[-2] is None
    assert_same(a, b, ga, gb, rtol=1e-10, atol=1e-10)


def test_frozen_hidden_gives_correct_unembedding_grads():
    hidden, weight, bias, labels = make_batch(2)
    hidden = [h.detach() for h in hidden]
    a, ga = run(mtp_cross_entropy, hidden, weight, bias, labels, None, chunk_size=7)
    b, gb = run(naive_mtp_cross_entropy, hidden, weight, bias, labels, None)
    assert_same(a, b, ga, gb, rtol=1e-10, atol=1e-10)


def test_head_without_targets_is_left_out_of_the_mean():
    hidden, weight, bias, labels = make_batch(4)
    labels = torch.full_like(labels, -100)
    labels[:, 1] = 2  # only head 1 (from position 0) has targets
    a, ga = run(mtp_cross_entropy, hidden, weight, bias, labels, None, chunk_size=7)
    b, gb = run(naive_mtp_cross_entropy, hidden, weight, bias, labels, None)
    assert a.per_head_tokens.tolist() == [B, 0, 0, 0]
    assert torch.isnan(a.per_head_ce[1:]).all() and torch.isnan(a.per_head_loss[1:]).all()
    assert_same(a, b, ga, gb, rtol=1e-10, atol=1e-10)


def test_weight_mean_with_zero_weight_sum_gives_zero_head_loss():
    K = 2
    hidden, weight, bias, labels = make_batch(K)
    w = make_weights("bsk", K)
    w[..., 1] = 0.0
    a, ga = run(mtp_cross_entropy, hidden, weight, bias, labels, w, normalization="weight_mean", chunk_size=7)
    b, gb = run(naive_mtp_cross_entropy, hidden, weight, bias, labels, w, normalization="weight_mean")
    assert a.per_head_loss[1].item() == 0.0
    assert_same(a, b, ga, gb, rtol=1e-10, atol=1e-10)


def test_all_ignored_batch_gives_zero_loss_that_backpropagates():
    hidden, weight, bias, labels = make_batch(2)
    labels = torch.full_like(labels, -100)
    out = mtp_cross_entropy(hidden, weight, labels, unembed_bias=bias)
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert hidden[0].grad is not None and (hidden[0].grad == 0).all()
    assert weight.grad is not None and (weight.grad == 0).all()
    assert out.per_head_tokens.tolist() == [0, 0] and torch.isnan(out.per_head_ce).all()


def test_weights_requiring_grad_raise():
    hidden, weight, bias, labels = make_batch(2)
    w = torch.ones(B, S, dtype=torch.float64, requires_grad=True)
    for fn in (mtp_cross_entropy, naive_mtp_cross_entropy):
        with pytest.raises(ValueError, match="require grad"):
            fn(hidden, weight, labels, w)


@pytest.mark.parametrize("shape", [(B, S + 1), (B, S, 3), (B * S,), (B, S, 2, 1)])
def test_wrong_weight_shape_raises_with_shapes(shape):
    hidden, weight, bias, labels = make_batch(2)
    with pytest.raises(ValueError, match=re.escape(str(shape))) as err:
        mtp_cross_entropy(hidden, weight, labels, torch.ones(shape, dtype=torch.float64))
    assert f"[{B}, {S}, 2]" in str(err.value)


def test_unknown_normalization_lists_valid_names():
    hidden, weight, bias, labels = make_batch(1)
    with pytest.raises(ValueError, match="token_mean.*weight_mean"):
        mtp_cross_entropy(hidden, weight, labels, normalization="sum")


def test_no_grad_path_matches():
    hidden, weight, bias, labels = make_batch(2)
    ref = mtp_cross_entropy(hidden, weight, labels, unembed_bias=bias, chunk_size=7)
    with torch.no_grad():
        out = mtp_cross_entropy(hidden, weight, labels, unembed_bias=bias, chunk_size=7)
    torch.testing.assert_close(out.loss, ref.loss.detach())
    assert not out.loss.requires_grad


def test_bf16_matches_fp32_loosely():
    hidden, weight, bias, labels = make_batch(2, dtype=torch.float32)
    w = make_weights("bs", 2, dtype=torch.float32)
    h16 = [h.detach().bfloat16().requires_grad_() for h in hidden]
    w16, b16 = weight.detach().bfloat16().requires_grad_(), bias.detach().bfloat16().requires_grad_()
    h32 = [h.detach().float().requires_grad_() for h in h16]
    w32, b32 = w16.detach().float().requires_grad_(), b16.detach().float().requires_grad_()
    a, ga = run(mtp_cross_entropy, h16, w16, b16, labels, w, chunk_size=7)
    b, gb = run(naive_mtp_cross_entropy, h32, w32, b32, labels, w)
    assert a.loss.dtype == torch.float32
    assert ga[0].dtype == torch.bfloat16 and ga[-2].dtype == torch.bfloat16
    torch.testing.assert_close(a.loss, b.loss, rtol=2e-2, atol=1e-3)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x.float(), y, rtol=2e-2, atol=2e-3)


def test_autocast_bf16_runs_and_returns_fp32_grads():
    hidden, weight, bias, labels = make_batch(2, dtype=torch.float32)
    b, gb = run(naive_mtp_cross_entropy, hidden, weight, bias, labels, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, ga = run(mtp_cross_entropy, hidden, weight, bias, labels, None, chunk_size=7)
    assert a.loss.dtype == torch.float32 and ga[0].dtype == torch.float32 and ga[-2].dtype == torch.float32
    torch.testing.assert_close(a.loss, b.loss, rtol=2e-2, atol=1e-3)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=2e-2, atol=2e-3)


def test_fused_function_grad_output_scaling_and_per_row_ce():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(10, D, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(V, D, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (10,), generator=g)
    rw = torch.rand(10, generator=g, dtype=torch.float64)
    loss, ce = fused_linear_cross_entropy(h, W, t, rw, chunk_size=3)
    ref_ce = F.cross_entropy(h @ W.T, t, reduction="none")
    torch.testing.assert_close(ce, ref_ce.detach())
    assert not ce.requires_grad
    (3.0 * loss).backward()
    gh, gw = h.grad.clone(), W.grad.clone()
    h.grad = W.grad = None
    (3.0 * (rw * ref_ce).sum()).backward()
    torch.testing.assert_close(gh, h.grad)
    torch.testing.assert_close(gw, W.grad)
