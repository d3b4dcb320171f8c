"""`training.compile`: torch.compile of the model's decoder blocks (the trunk's and the MTP heads').

Why blocks and not the whole model: the blocks are where the time goes (attention, MLP, norms,
rotary embeddings, residual adds: many small element-wise kernels that inductor fuses), they are
all one class, so one compiled graph serves every block of the trunk and every head, and the
hooks around a block (the MTP model's capture of the trunk state, FSDP2's gathers, activation
checkpointing) stay outside the compiled code. The fused chunked loss stays eager: it already
materialises one chunk of logits at a time with its gradient computed in the forward.

Only `forward` is replaced (an instance attribute: the class's compiled forward bound to the
block), so parameter names, state dicts and checkpoints are the same as without compile, and a
deep copy of a compiled block runs its own weights. Shapes are dynamic from the first call: every
sequence length runs the same kernels, so a resumed run (which compiles afresh, at another
step) computes exactly what the uninterrupted run computed.
"""

from __future__ import annotations

import shutil
import types
import warnings

import torch
from torch import nn

from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.models.hf_layout import find_layout


def compiled_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks `compile_blocks` compiles: the LM's decoder blocks (an MTP model's, an HF causal
    LM's, else the largest list of same-type modules, as a critic's backbone), then the MTP heads."""
    lm = getattr(model, "lm", model)
    try:
        blocks = list(find_layout(lm).layers)
    except WMTPError:
        blocks = []
        for module in model.modules():
            if isinstance(module, nn.ModuleList) and len(module) > len(blocks) and len({type(m) for m in module}) == 1:
                blocks = list(module)
    blocks += [h for h in (getattr(model, "extra_heads", None) or []) if isinstance(h, nn.Module)]
    return blocks


def use_math_attention(model: nn.Module) -> None:
    """HF's "eager" attention (matmul, softmax in fp32, matmul) in every block, the MTP heads'
    copies included (each deep copy holds its own config)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"


def can_compile(device_type: str = "cpu") -> bool:
    """Whether torch.compile can build kernels here: on CPU, inductor needs a C++ compiler, which
    a bare machine (Python and make only) may not have."""
    if device_type != "cpu":
        return True
    try:
        from torch._inductor import cpp_builder

        return shutil.which(cpp_builder.get_cpp_compiler()) is not None
    except Exception:  # noqa: BLE001 - any failure to find one means: no compiled kernels
        return False


def compile_blocks(model: nn.Module, math_attention: bool = False, device_type: str = "cpu") -> int:
    """Compile every decoder block's forward in place; returns how many were compiled (0, with a
    warning, where `can_compile` says kernels cannot be built: the run goes on eager). Calling it
    twice on one model compiles nothing more.

    math_attention (the loop sets it on CPU): compile the blocks' attention as plain matmuls and
    softmax, which inductor fuses, instead of calling the fused SDPA kernel. At the micro model's
    lengths (about 100 tokens) the CPU flash-attention backward took a fifth of the whole step;
    compiled math attention made the bf16 MTP step 1.57x faster (CPU seconds per token, one
    thread, width 256, batch 16 x 112)."""
    blocks = compiled_blocks(model)
    if not blocks:
        raise ConfigError("training.compile: cannot find the model's decoder blocks to compile")
    if not can_compile(device_type):
        warnings.warn("training.compile: no C++ compiler found for torch.compile's CPU kernels; "
                      "the model runs eager (install g++ to compile)", stacklevel=2)
        return 0
    if math_attention:
        use_math_attention(model)
    n = 0
    for block in blocks:
        if getattr(block, "_wmtp_compiled", False):
            continue
        # The class's forward, compiled once and bound to each block: a deep copy of a block (the
        # MTP heads are copies of the last one) is then bound to the copy, never to the original.
        block.forward = types.MethodType(_compiled_forward(type(block)), block)
        block._wmtp_compiled = True
        n += 1
    return n


_COMPILED: dict[type, object] = {}


def _compiled_forward(cls: type):
    if cls not in _COMPILED:
        _COMPILED[cls] = torch.compile(cls.forward, dynamic=True)
    return _COMPILED[cls]
