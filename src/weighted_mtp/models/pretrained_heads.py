"""MTP heads trained with a base model, kept beside it and attached when a policy loads the base.

Why: heads 2..K of a fresh MTP model are copies of the LM's last block, so at the first step they
predict token t+1 where t+k is asked; their large errors flow back into the trunk and the first
part of fine-tuning goes to undoing that. On `embedded:micro-code` (1.25M parameters), uniform MTP
SFT from copied heads scored pass@1 0.275 on the embedded test problems where next-token SFT of
the same base, same data and steps, scored 0.505. The base build therefore trains the heads on
the frozen LM (`warm_up_heads`): the trunk keeps what pretraining taught it, and fine-tuning
starts from heads that already predict their offsets.

They are stored next to the plain HF files (`pretrained_mtp_heads.safetensors` and its json),
not as an MTP export: the directory stays a plain causal LM that loads with any K, and
`attach_pretrained_heads` puts the heads in when the policy asks for the K they were trained for.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from weighted_mtp.errors import WMTPError
from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
from weighted_mtp.models.mtp import MTPModel

HEADS_FILE = "pretrained_mtp_heads.safetensors"
HEADS_META = "pretrained_mtp_heads.json"


def warm_up_heads(lm, batches: Callable[[], torch.Tensor], n_future_tokens: int, steps: int, learning_rate: float,
                  bf16: bool = True, log: Callable[[int, float], None] | None = None) -> tuple[MTPModel, list[float]]:
    """Train heads 2..K of `MTPModel(lm, n_future_tokens)` on packed rows from `batches()` with the
    LM frozen (head 1, the LM's own last block, included): the loss is the sum of heads 2..K's CE.
    Warmup over a tenth of the steps, then cosine to a tenth of `learning_rate`."""
    model = MTPModel(lm, n_future_tokens)
    lm.requires_grad_(False)
    params = list(model.extra_heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    scales = [0.0] + [1.0] * (n_future_tokens - 1)  # head 1 is frozen: its CE is not even computed
    warmup = max(1, steps // 10)
    losses = []
    model.train()
    try:
        for step in range(steps):
            progress = max(0.0, (step - warmup) / max(1, steps - warmup))
            factor = (step + 1) / warmup if step < warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * factor
            ids = batches()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(ids, torch.ones_like(ids))
                loss = mtp_cross_entropy(out.head_hidden, model.unembedding.weight, ids, head_scales=scales).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item() / (n_future_tokens - 1))  # mean CE over the trained heads
            if log is not None:
                log(step, losses[-1])
    finally:
        lm.requires_grad_(True)
    model.eval()
    return model, losses


def save_pretrained_heads(model: MTPModel, directory: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.extra_heads.state_dict().items()}
    save_file(state, directory / HEADS_FILE)
    (directory / HEADS_META).write_text(json.dumps(
        {"n_future_tokens": model.n_future_tokens, "head_type": "parallel",
         "trained": "heads 2..K on the frozen base LM (weighted_mtp.models.pretrained_heads)"}, indent=2) + "\n")


def attach_pretrained_heads(model: MTPModel, directory: Path) -> bool:
    """Load the heads stored beside a base into a fresh MTP model of the same K and head type;
    True if it did. Any other K (or a sequential-head model) keeps its freshly copied heads."""
    meta_path, heads_path = Path(directory) / HEADS_META, Path(directory) / HEADS_FILE
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
        k, head_type = int(meta["n_future_tokens"]), str(meta["head_type"])
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise WMTPError(f"{meta_path}: unreadable ({type(e).__name__}: {e})") from e
    if k != model.n_future_tokens or head_type != getattr(model, "head_type", "parallel") or k < 2:
        return False
    try:
        state = load_file(heads_path)
        model.extra_heads.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - a missing, corrupt or mismatched file names itself
        raise WMTPError(f"{heads_path}: cannot load the pretrained MTP heads ({type(e).__name__}: {e})") from e
    return True
