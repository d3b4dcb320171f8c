"""Drafting with sequential (DeepSeek-V3-style) MTP heads during self-speculative greedy decoding.

Depth k (head k+1) at position t reads depth k-1's output at t and the embedding of token t+k,
and predicts token t+k+1. With committed tokens x_0..x_m (x_m the newest, not yet run through
the LM) and the LM's normed outputs known for positions < m, the drafts for x_{m+1..m+n} come
from position m-1: depth 1 reads x_m and drafts x_{m+1}, depth 2 reads that draft and drafts
x_{m+2}, and so on, each depth one block plus an argmax over the (draft) vocabulary.

Caches: depth k's KV cache holds exactly the positions whose inputs are all committed
(t + k <= m); the positions past that were fed drafts, so they are recomputed at the next step
and cropped now. A depth therefore runs over (tokens accepted + k) positions per step. The
previous depth's output at the one boundary position (t = m - k) is kept for the next step, so
no depth ever recomputes another's.

Draft vocabulary (FR-Spec, Zhao et al., 2025): drafting with the full unembedding costs each
head a [D, V] product, a fifth of a whole step for SmolLM2 (V = 49,152 of 135M parameters);
an argmax over the most frequent tokens only is 6-30x cheaper and loses only the drafts that
would have been rare tokens. Verification always uses the full vocabulary, so the output is
unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.hf_layout import find_layout


def _layer_idx(block: nn.Module) -> int:
    for module in block.modules():
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int):
            return idx
    raise WMTPError(f"{type(block).__name__} has no attention layer_idx; cannot give it a KV cache")


class SequentialDrafter:
    """KV caches and boundary states of `n` sequential heads of an MTPModel (batch size 1)."""

    def __init__(self, model, n: int, draft_vocab: Tensor | None = None):
        from transformers import DynamicCache

        self.lm = model.lm
        self.heads = list(model.extra_heads)[:n]
        backbone = find_layout(self.lm).backbone
        self.rotary = getattr(backbone, "rotary_emb", None)
        if self.rotary is None:
            raise WMTPError(f"sequential-head drafting needs a rotary-embedding model; "
                            f"{type(self.lm).__name__} has none")
        self.embed = self.lm.get_input_embeddings()
        weight = model.unembedding.weight
        if draft_vocab is None:
            self.vocab, self.weight = None, weight
        else:
            self.vocab = draft_vocab.to(weight.device, torch.long)
            self.weight = weight.index_select(0, self.vocab).contiguous()
        self.caches = [DynamicCache(config=self.lm.config) for _ in self.heads]
        for cache in self.caches:  # sliding-window layers keep what a crop may need to restore
            cache.activate_past_recording()
        self.layer_idx = [_layer_idx(h.mtp_block) for h in self.heads]
        self.start = [0] * len(self.heads)  # c_k: positions 0..c_k-1 are in depth k's cache
        self.boundary: list[Tensor | None] = [None] * len(self.heads)  # depth k's output at c_{k+1}..c_k-1
        self.active = len(self.heads)

    def _mask(self, x: Tensor, cache, positions: Tensor, layer_idx: int):
        from transformers import masking_utils

        config = self.lm.config
        types = getattr(config, "layer_types", None)
        if types is not None and layer_idx < len(types):
            kind = types[layer_idx]
        else:
            kind = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
        make = (masking_utils.create_sliding_window_causal_mask if kind == "sliding_attention"
                else masking_utils.create_causal_mask)
        return make(config=config, inputs_embeds=x, attention_mask=None, cache=cache, position_ids=positions,
                    layer_idx=layer_idx)

    def _run(self, depth: int, embeds: Tensor, hidden: Tensor, first: int) -> Tensor:
        """Depth `depth` (0-based) over positions first..first+n-1: embeds and hidden [1, n, D]."""
        head, cache = self.heads[depth], self.caches[depth]
        positions = torch.arange(first, first + embeds.shape[1], device=embeds.device).unsqueeze(0)
        mask = self._mask(embeds, cache, positions, self.layer_idx[depth])
        return head(embeds, hidden, attention_mask=mask, position_ids=positions,
                    position_embeddings=self.rotary(embeds, positions), cache=cache, use_cache=True)

    def draft(self, committed: list[int], head1: Tensor, n: int) -> list[int]:
        """Drafts for the n tokens after committed[-1]. `head1` [1, m - c_1, D]: the LM's normed
        output at the positions it has seen since the last call (c_1 .. m-1, m = len(committed)-1).
        Depths past the first `n` are not run, now or later (n only shrinks near max_new_tokens)."""
        m = len(committed) - 1
        self.active = min(self.active, n)
        device = head1.device
        previous = head1  # depth k-1's output over positions start[k-1]'s range, this step
        previous_first = self.start[0]
        kept = list(self.boundary)  # last step's boundaries; this step overwrites them as it goes
        drafts: list[int] = []
        for depth in range(self.active):
            k = depth + 1
            first = self.start[depth]
            # depth k-1's output at first..m-1: the kept boundary, then this step's
            if first < previous_first:
                previous = torch.cat([kept[depth - 1], previous], dim=1)
            tokens = (committed + drafts)[first + k: m + k]  # x_{t+k} for t = first..m-1
            embeds = self.embed(torch.tensor([tokens], device=device))
            out = self._run(depth, embeds, previous, first)
            h = out[0, -1]
            logits = h @ self.weight.t()
            best = int(logits.argmax())
            drafts.append(best if self.vocab is None else int(self.vocab[best]))
            # Keep the positions whose inputs were all committed (t + k <= m).
            keep = max(0, m - k + 1)
            cache = self.caches[depth]
            extra = cache.get_seq_length(self.layer_idx[depth]) - keep
            if extra > 0:
                cache.layers[self.layer_idx[depth]].crop(-extra)  # its own slot only; the others are empty
            next_start = max(0, m - k)  # where depth k+1 resumes next step
            self.boundary[depth] = out[:, next_start - first: keep - first]
            self.start[depth] = keep
            previous, previous_first = out, first
        return drafts
