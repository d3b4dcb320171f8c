"""The no-grad per-token CE against the obvious full-logits computation."""

import pytest
import torch
import torch.nn.functional as F

from weighted_mtp.losses.token_ce import next_token_cross_entropy


def naive(hidden, weight, labels, bias=None):
    logits = hidden[:, :-1] @ weight.t() + (0 if bias is None else bias)
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, weight.shape[0]).double(), targets.reshape(-1), reduction="none",
                         ignore_index=-100).reshape(targets.shape)
    out = torch.zeros(labels.shape, dtype=torch.float64)
    out[:, 1:] = ce
    return out.float()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_matches_full_logits(seed, chunk_size):
    g = torch.Generator().manual_seed(seed)
    B, S, D, V = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in [(1, 6), (2, 12), (3, 17), (5, 50)])
    hidden = torch.randn(B, S, D, generator=g, requires_grad=True)
    weight = torch.randn(V, D, generator=g, requires_grad=True)
    bias = torch.randn(V, generator=g) if seed % 2 else None
    labels = torch.randint(0, V, (B, S), generator=g)
    labels[:, : S // 3] = -100  # prompt span
    labels[0, -2:] = -100  # padding at the end of one row
    labels[torch.rand(B, S, generator=g) < 0.2] = -100
    got = next_token_cross_entropy(hidden, weight, labels, bias=bias, chunk_size=chunk_size)
    want = naive(hidden.detach(), weight.detach(), labels, bias)
    assert got.shape == (B, S) and got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got[:, 0] == 0).all() and (got[labels == -100] == 0).all()


def test_all_ignored_bf16_and_errors():
    hidden, weight = torch.randn(2, 4, 8), torch.randn(10, 8)
    assert next_token_cross_entropy(hidden, weight, torch.full((2, 4), -100)).abs().sum() == 0
    labels = torch.randint(0, 10, (2, 4))
    got = next_token_cross_entropy(hidden.bfloat16(), weight.bfloat16(), labels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, naive(hidden.bfloat16().float(), weight.bfloat16().float(), labels),
                               rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        next_token_cross_entropy(hidden, weight, torch.full((2, 4), 10))
    with pytest.raises(ValueError, match=r"\[2, 4, D\]"):
        next_token_cross_entropy(hidden[:, :3], weight, labels)
