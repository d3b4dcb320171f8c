"""Training sets for MTP heads on a frozen model: token sequences plus head 1's normed hidden
state at every position, computed once and cached, so head training never runs the trunk.

* source ``self`` (self-distillation, as Medusa-2 and the DeepSeek-V3 deployment notes advise
  for heads that must agree with the deployed model): the model's own greedy continuations of
  the prompts. Their tokens are exactly what greedy speculative decoding verifies drafts
  against, and the hidden states come from the same incremental (cached) computation as at
  inference. The targets are the continuation tokens; prompt tokens are context only.
* source ``data``: prompt + the row's own response, teacher-forced in one forward pass; the
  targets are the response tokens (the heads learn the data, not the model).

A set is one safetensors file: ``input_ids`` and ``head1`` (head-1 states, fp32, position i of
a row predicting nothing itself) concatenated over rows, ``offsets`` and ``prompt_lens``. It is
keyed on the model's weights file identity, the prompts and the settings, written under a
temporary name and renamed, so an interrupted build never leaves a partial set behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.hf_layout import find_layout

SET_VERSION = 1


@dataclass
class DistillItem:
    """One row: ``input_ids`` [n] (prompt then target tokens), ``prompt_len`` (targets are the
    tokens from there on) and ``head1`` [n, D], head 1's normed state at each position (the last
    position's is zeros: it is never needed, nothing after it is predicted)."""

    input_ids: Tensor
    prompt_len: int
    head1: Tensor


def model_identity(model_dir: Path) -> dict:
    """What identifies a model directory's weights cheaply: file names, sizes and mtimes."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".json", ".bin"))
    return {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in files}


def set_key(model_dir: Path, texts: Sequence[tuple[str, str]], settings: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": SET_VERSION, "model": model_identity(model_dir), "settings": settings},
                        sort_keys=True).encode())
    for prompt, response in texts:
        h.update(prompt.encode() + b"\0" + response.encode() + b"\1")
    return h.hexdigest()[:16]


def save_set(items: list[DistillItem], path: Path) -> None:
    from safetensors.torch import save_file

    lengths = torch.tensor([len(it.input_ids) for it in items], dtype=torch.int64)
    tensors = {
        "input_ids": torch.cat([it.input_ids.long() for it in items]),
        "head1": torch.cat([it.head1.float() for it in items]).contiguous(),
        "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]),
        "prompt_lens": torch.tensor([it.prompt_len for it in items], dtype=torch.int64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, tmp)
    os.replace(tmp, path)


def load_set(path: Path) -> list[DistillItem]:
    from safetensors.torch import load_file

    try:
        t = load_file(path)
        offsets, prompt_lens = t["offsets"].tolist(), t["prompt_lens"].tolist()
        return [DistillItem(t["input_ids"][a:b], p, t["head1"][a:b])
                for a, b, p in zip(offsets[:-1], offsets[1:], prompt_lens)]
    except Exception as e:  # noqa: BLE001 - a damaged cache file: say which
        raise WMTPError(f"{path}: unreadable head-training set ({type(e).__name__}: {e}); delete it to rebuild") from e


@torch.inference_mode()
def greedy_continuations(lm: nn.Module, prompt_ids: list[list[int]], max_new_tokens: int, eos: set[int],
                         pad_id: int, batch_size: int, say: Callable[[str], None] = lambda _: None
                         ) -> list[DistillItem]:
    """Each prompt's greedy continuation (up to and including the first EOS) and head 1's states,
    batched with left padding through transformers' `generate`; the states are the ones its
    cached decoding computed (the last layer's output, i.e. after the final norm)."""
    items: list[DistillItem] = []
    device = next(lm.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))  # similar lengths together
    out: dict[int, DistillItem] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(prompt_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(rows):
            ids[j, width - len(prompt_ids[i]):] = torch.tensor(prompt_ids[i])
            mask[j, width - len(prompt_ids[i]):] = 1
        gen = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                          do_sample=False, pad_token_id=pad_id, output_hidden_states=True,
                          return_dict_in_generate=True)
        states = torch.cat([gen.hidden_states[0][-1]] + [step[-1] for step in gen.hidden_states[1:]], dim=1)
        for j, i in enumerate(rows):
            n_prompt = len(prompt_ids[i])
            new = gen.sequences[j, width:].tolist()
            end = next((q + 1 for q, t in enumerate(new) if t in eos), len(new))
            seq = gen.sequences[j, width - n_prompt: width + end].cpu()
            head1 = torch.zeros(len(seq), states.shape[-1])
            head1[:-1] = states[j, width - n_prompt: width + end - 1].float().cpu()
            out[i] = DistillItem(seq, n_prompt, head1)
        say(f"continuations: {min(start + batch_size, len(order))}/{len(order)} prompts")
    items = [out[i] for i in range(len(prompt_ids))]
    return items


@torch.inference_mode()
def teacher_forced(lm: nn.Module, rows: list[tuple[list[int], int]], pad_id: int, batch_size: int,
                   say: Callable[[str], None] = lambda _: None) -> list[DistillItem]:
    """Head 1's states over given token rows (prompt + response, prompt length), one forward
    pass per right-padded batch."""
    backbone = find_layout(lm).backbone
    device = next(lm.parameters()).device
    items: list[DistillItem] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(r) for r, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, (r, _) in enumerate(chunk):
            ids[j, :len(r)] = torch.tensor(r)
            mask[j, :len(r)] = 1
        h = backbone(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).last_hidden_state
        for j, (r, n_prompt) in enumerate(chunk):
            head1 = h[j, :len(r)].float().cpu().clone()
            head1[-1] = 0.0
            items.append(DistillItem(torch.tensor(r), n_prompt, head1))
        say(f"teacher-forced: {min(start + batch_size, len(rows))}/{len(rows)} rows")
    return items


def draft_vocabulary(items: Sequence[DistillItem], size: int | None, vocab_size: int) -> Tensor | None:
    """The target tokens seen in training, the `size` most frequent of them (ties by lower id),
    sorted: a head never trained to produce a token will not draft it usefully, and every id
    left out makes drafting cheaper. None (size None): the whole vocabulary."""
    if size is None:
        return None
    targets = torch.cat([it.input_ids[it.prompt_len:] for it in items]).long()
    counts = torch.bincount(targets, minlength=vocab_size).double()
    score = counts * len(counts) - torch.arange(len(counts), dtype=torch.double)  # frequency, then lower id
    n = min(size, int((counts > 0).sum()))
    if n == 0:
        raise WMTPError("no target tokens to build a draft vocabulary from")
    return score.topk(n).indices.sort().values
