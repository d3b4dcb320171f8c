"""`training.compile`: torch.compile of the model's decoder blocks (the trunk's and the MTP heads').

Why blocks and not the whole model: the blocks are where the time goes (attention, MLP, norms,
rotary embeddings, residual adds: many small element-wise kernels that inductor fuses), they are
all one class, so one compiled graph serves every block of the trunk and every head, and the
hooks around a block (the MTP model's capture of the trunk state, FSDP2's gathers, activation
checkpointing) stay outside the compiled code. The fused chunked loss stays eager: it already
materialises one chunk of logits at a time with its gradient computed in the forward.

Only `forward` is replaced (an instance attribute), so parameter names, state dicts and
checkpoints are the same as without compile. Shapes are dynamic from the first call: every
sequence length runs the same kernels, so a resumed run (which compiles afresh, at another
step) computes exactly what the uninterrupted run computed.
"""

from __future__ import annotations

import torch
from torch import nn

from weighted_mtp.errors import ConfigError


def compiled_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks `compile_blocks` compiles: the LM's decoder blocks, then the MTP heads."""
    from weighted_mtp.training.distributed import decoder_blocks

    blocks = decoder_blocks(model)
    blocks += [h for h in (getattr(model, "extra_heads", None) or []) if isinstance(h, nn.Module)]
    return blocks


def compile_blocks(model: nn.Module) -> int:
    """Compile every decoder block's forward in place; returns how many were compiled. Calling it
    twice on one model compiles nothing more."""
    blocks = compiled_blocks(model)
    if not blocks:
        raise ConfigError("training.compile: cannot find the model's decoder blocks to compile")
    n = 0
    for block in blocks:
        if getattr(block, "_wmtp_compiled", False):
            continue
        block.forward = torch.compile(block.forward, dynamic=True)
        block._wmtp_compiled = True
        n += 1
    return n
