"""The value head: zero initial values, fp32 whatever the input dtype or autocast, dropout only in
training, the documented MLP widths, and a clear error for an unknown type."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weighted_mtp.models.value_head import ValueHead, create_value_head


def randomise_last_layer(head: ValueHead) -> None:
    last = [m for m in head.net.modules() if isinstance(m, nn.Linear)][-1]
    torch.manual_seed(0)
    nn.init.normal_(last.weight)
    nn.init.normal_(last.bias)


@pytest.mark.parametrize("head_type", ["linear", "mlp"])
def test_initial_values_are_exactly_zero(head_type):
    head = ValueHead(64, head_type)
    out = head(torch.randn(2, 5, 64))
    assert out.shape == (2, 5) and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros(2, 5))


@pytest.mark.parametrize("head_type", ["linear", "mlp"])
def test_fp32_for_bf16_input_and_under_autocast(head_type):
    head = ValueHead(64, head_type)
    randomise_last_layer(head)
    x = torch.randn(2, 5, 64)
    ref = head(x)
    assert all(p.dtype == torch.float32 for p in head.parameters())
    assert head(x.bfloat16()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)  # autocast really was off: same fp32 numbers
    head.to(torch.bfloat16)  # a whole-model downcast must leave the head in fp32
    assert all(p.dtype == torch.float32 for p in head.parameters())


def test_dropout_only_in_training():
    head = ValueHead(64, "mlp", dropout=0.5)
    randomise_last_layer(head)
    x = torch.randn(4, 8, 64)
    head.train()
    assert not torch.equal(head(x), head(x))
    head.eval()
    assert torch.equal(head(x), head(x))


def test_mlp_widths():
    widths = [(m.in_features, m.out_features) for m in create_value_head(128, "mlp") if isinstance(m, nn.Linear)]
    assert widths == [(128, 16), (16, 8), (8, 1)]
    tiny = [(m.in_features, m.out_features) for m in create_value_head(8, "mlp") if isinstance(m, nn.Linear)]
    assert tiny == [(8, 1), (1, 1), (1, 1)]
    assert isinstance(create_value_head(32, "linear"), nn.Linear)


def test_unknown_type_lists_valid_types():
    with pytest.raises(ValueError, match="linear, mlp"):
        create_value_head(32, "transformer")
