"""The critic's value head: hidden states [B, S, D] -> values [B, S].

It always computes in fp32, whatever the backbone's dtype or autocast says: values feed
advantages and token weights, where bf16's 8-bit mantissa turns small value differences into
noise. Its last layer starts at zero, so every initial value is exactly 0 and early training
weights start neutral instead of at a random bias.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

HEAD_TYPES = ("linear", "mlp")


def create_value_head(hidden_size: int, head_type: str = "mlp", dropout: float = 0.0) -> nn.Module:
    """An fp32 module mapping [..., hidden_size] to [..., 1], its last layer zero-initialised."""
    if head_type == "linear":
        net = nn.Linear(hidden_size, 1)
        last = net
    elif head_type == "mlp":
        # max(1, ...): tiny test models (h < 16) would otherwise get zero-width layers.
        h1, h2 = max(1, hidden_size // 8), max(1, hidden_size // 16)
        last = nn.Linear(h2, 1)
        net = nn.Sequential(
            nn.Linear(hidden_size, h1), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(h1, h2), nn.GELU(), nn.Dropout(dropout),
            last,
        )
    else:
        raise ValueError(f"unknown value head type {head_type!r}; valid types: {', '.join(HEAD_TYPES)}")
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net.to(torch.float32)


class ValueHead(nn.Module):
    """`create_value_head` plus the fp32 guarantee and the squeeze; keeps its config for saving."""

    def __init__(self, hidden_size: int, head_type: str = "mlp", dropout: float = 0.0):
        super().__init__()
        self.hidden_size, self.head_type, self.dropout = int(hidden_size), head_type, float(dropout)
        self.net = create_value_head(self.hidden_size, head_type, self.dropout)

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "head_type": self.head_type, "dropout": self.dropout}

    def forward(self, hidden: Tensor) -> Tensor:
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return self.net(hidden.float()).squeeze(-1)

    def _apply(self, fn, recurse=True):
        # `critic.to(torch.bfloat16)` must not downcast the head: re-cast floating params to fp32.
        super()._apply(fn, recurse)
        for p in self.parameters():
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()
                if p.grad is not None:
                    p.grad.data = p.grad.data.float()
        return self
