"""DeepSeek-V3-style sequential MTP heads (Liu et al., 2024, sec. 2.2), in the module layout of
transformers' `MtpLayer`, so their state dict is the one transformers' `MtpModel` loads.

Depth k (head k+1, k = 1..K-1) at position t reads the previous depth's hidden state at t
(depth 0 is head 1: the LM's output after its final norm, what transformers hands its MTP
layers as `hidden_states[-1]`) and the embedding of token t+k:

    x = eh_proj([enorm(emb(x_{t+k})), hnorm(h^{k-1}_t)])      2D -> D, no bias
    h^k_t = post_norm(block(x))                                 one decoder block of the LM's kind

and predicts token t+k+1 through the LM's (shared) unembedding; h^k is what depth k+1 reads.
Knowing the token in between is what lets a cheap one-block head stay accurate several tokens
ahead (EAGLE makes the same observation), unlike a parallel head that must guess it.

Initialisation (a choice; DeepSeek and Megatron start from random): the block is a copy of the
LM's last block, `post_norm` a copy of the LM's final norm (the norm the unembedding was trained
behind), `enorm` / `hnorm` are fresh norms, and `eh_proj` is the identity on the hidden half and
zero on the embedding half, so an untrained head starts as "the last block once more" on head
1's state and learns how to use the next token's embedding.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.hf_layout import find_layout

HEAD_TYPES = ("parallel", "sequential")


def declares_mtp_layers(config) -> bool:
    """Whether this transformers config class has MTP layers in its schema (GLM-4.5,
    DeepSeek-V3, ...): then transformers' `MtpModel` can load heads saved in its layout."""
    return hasattr(type(config), "get_mtp_config") and "num_mtp_layers" in _config_fields(config)


def _config_fields(config) -> set[str]:
    fields = set(getattr(type(config), "__dataclass_fields__", {}) or {})
    fields |= set(getattr(type(config), "__annotations__", {}) or {})
    fields |= set(getattr(config, "attribute_map", {}) or {})
    return fields


class SequentialHead(nn.Module):
    """One depth of sequential MTP. Submodule names are transformers' `MtpLayer`'s (enorm,
    hnorm, eh_proj, mtp_block, post_norm). `hidden_first` puts [hnorm(h), enorm(e)] into
    eh_proj instead of [enorm(e), hnorm(h)] (transformers' `mtp_hidden_states_first`)."""

    def __init__(self, block: nn.Module, enorm: nn.Module, hnorm: nn.Module, post_norm: nn.Module,
                 hidden_size: int, hidden_first: bool = False):
        super().__init__()
        self.enorm, self.hnorm = enorm, hnorm
        self.eh_proj = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.mtp_block = block
        self.post_norm = post_norm
        self.hidden_first = hidden_first

    def forward(self, embeds: Tensor, previous_hidden: Tensor, *block_args, **block_kwargs) -> Tensor:
        """embeds [B, S, D]: the embedding of the token this depth is told (t+k at position t);
        previous_hidden [B, S, D]: the previous depth's output. Block arguments (mask, rotary
        embeddings, cache, ...) follow the LM's own convention for its last block."""
        e, h = self.enorm(embeds), self.hnorm(previous_hidden)
        x = self.eh_proj(torch.cat([h, e] if self.hidden_first else [e, h], dim=-1))
        out = self.mtp_block(x, *block_args, **block_kwargs)
        return self.post_norm(out[0] if isinstance(out, tuple) else out)

    @torch.no_grad()
    def init_projection(self) -> None:
        """eh_proj = [0 | I] on (embedding, hidden) halves (the hidden half first when hidden_first)."""
        d = self.eh_proj.out_features
        w = torch.zeros_like(self.eh_proj.weight)
        cols = slice(0, d) if self.hidden_first else slice(d, 2 * d)
        w[:, cols] = torch.eye(d, dtype=w.dtype, device=w.device)
        self.eh_proj.weight.copy_(w)


def _fresh_norm(template: nn.Module) -> nn.Module:
    norm = copy.deepcopy(template)
    with torch.no_grad():
        for name, p in norm.named_parameters():
            p.fill_(0.0 if name.endswith("bias") else 1.0)
    return norm


def _block_for(lm: nn.Module, last: nn.Module, depth: int) -> nn.Module:
    """A decoder block for MTP depth `depth` (0-based), initialised from the LM's last block.

    For a family that declares MTP layers it is built the way transformers builds its MTP
    layers (the last block's class with `config.get_mtp_config()` and layer index `depth`), so
    the saved state dict matches what `MtpModel` expects even where the MTP block differs from
    the last trunk block (GLM-4.5's MTP layers are MoE whatever `first_k_dense_replace` says);
    otherwise a copy of the last block."""
    if not declares_mtp_layers(lm.config):
        return copy.deepcopy(last)
    mtp_config = copy.deepcopy(lm.config)
    mtp_config.num_mtp_layers = max(getattr(lm.config, "num_mtp_layers", 0) or 0, depth + 1)
    block = type(last)(mtp_config.get_mtp_config(), depth)
    for module in block.modules():  # some parameters (fused MoE experts) are created uninitialised
        lm._init_weights(module)
    last_state = last.state_dict()
    state = block.state_dict()
    if state.keys() == last_state.keys() and all(state[k].shape == last_state[k].shape for k in state):
        block.load_state_dict(last_state)
    return block.to(device=next(last.parameters()).device, dtype=next(last.parameters()).dtype)


def build_sequential_heads(lm: nn.Module, n_heads: int) -> nn.ModuleList:
    """`n_heads` sequential heads for `lm` (heads 2..n_heads+1), initialised as described above."""
    layout = find_layout(lm)
    last = layout.layers[-1]
    hidden = lm.get_output_embeddings().weight.shape[1]
    hidden_first = bool(getattr(lm.config, "mtp_hidden_states_first", False))
    if getattr(lm.config, "chain_hidden_post_norm", None) is not None:
        raise WMTPError(f"{type(lm.config).__name__} chains MTP layers through a shared post-norm; "
                        "sequential heads support one post-norm per head only")
    heads = nn.ModuleList()
    for depth in range(n_heads):
        head = SequentialHead(_block_for(lm, last, depth), _fresh_norm(layout.final_norm),
                              _fresh_norm(layout.final_norm), copy.deepcopy(layout.final_norm), hidden,
                              hidden_first=hidden_first)
        head.to(device=lm.get_output_embeddings().weight.device, dtype=lm.get_output_embeddings().weight.dtype)
        head.init_projection()
        heads.append(head)
    return heads


def shifted(embeds: Tensor, shift: int) -> Tensor:
    """embeds[:, t + shift] at position t, zeros where t + shift runs past the sequence (those
    positions have no target at this depth, and causal attention never lets an earlier one see
    them)."""
    B, S, D = embeds.shape
    if shift >= S:
        return embeds.new_zeros(B, S, D)
    return torch.cat([embeds[:, shift:], embeds.new_zeros(B, shift, D)], dim=1)


def run_sequential_heads(heads: nn.ModuleList, head1: Tensor, embeds: Tensor, block_args: tuple,
                         block_kwargs: dict) -> list[Tensor]:
    """Every depth over a whole sequence (training and scoring): [h^1, ..., h^{K-1}], each
    [B, S, D] and already normed, given head 1's normed hidden state and the token embeddings."""
    out, previous = [], head1
    for depth, head in enumerate(heads, start=1):
        previous = head(shifted(embeds, depth), previous, *block_args, **block_kwargs)
        out.append(previous)
    return out


class _CaptureBlock(nn.Module):
    """Stands in for every decoder block: records the call, passes the hidden state through."""

    def __init__(self):
        super().__init__()
        self.seen: tuple[tuple, dict] | None = None

    def forward(self, hidden, *args, **kwargs):
        self.seen = (args, kwargs)
        return hidden


@torch.no_grad()
def block_call_arguments(lm: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[tuple, dict]:
    """The arguments the LM passes its last decoder block for these inputs (masks, rotary
    embeddings, position ids, in the architecture's own convention), without running a block:
    the blocks are swapped for a recorder for one backbone call (embeddings and the final norm
    still run, a few thousandths of the trunk). Lets heads train on cached head-1 states of a
    frozen trunk."""
    layout = find_layout(lm)
    backbone, layers = layout.backbone, layout.layers
    name = next((n for n, m in backbone.named_children() if m is layers), None)
    if name is None:
        raise WMTPError(f"cannot find the decoder blocks of {type(lm).__name__} by name")
    recorder = _CaptureBlock()
    setattr(backbone, name, nn.ModuleList([recorder] * len(layers)))
    try:
        backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True)
    finally:
        setattr(backbone, name, layers)
    if recorder.seen is None:
        raise WMTPError(f"{type(backbone).__name__} called no decoder block")
    return recorder.seen
