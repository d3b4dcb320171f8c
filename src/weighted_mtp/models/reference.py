"""A frozen next-token model that scores targets: the Rho-1 reference.

Deliberately not an ``nn.Module``: a reference stored as an attribute of an objective or a
trainer must never end up in the optimizer, a checkpoint's state dict or a DDP wrapper. It
loads any local HF causal-LM directory; an MTP export (``MTPModel.save_pretrained``) works too,
because its head 1 is a plain HF model and ``AutoModelForCausalLM`` ignores the extra-head files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.losses.token_ce import next_token_cross_entropy
from weighted_mtp.models.hf_layout import find_layout
from weighted_mtp.models.load import load_causal_lm


class ReferenceModel:
    def __init__(self, lm: nn.Module, path: str | Path | None = None):
        for attr in ("final_logit_softcapping", "logit_scale"):
            if getattr(lm.config, attr, None) not in (None, 1.0):
                # The CE applies the plain output embedding; these models transform logits after it.
                raise WMTPError(f"{path or type(lm).__name__}: config.{attr} is set; reference CE does not support it")
        self.lm = lm.eval()
        self.lm.requires_grad_(False)
        self.path = None if path is None else Path(path)
        self._layout = find_layout(lm)

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> "ReferenceModel":
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise WMTPError(
                f"reference model {path}: not a local HF model directory (no config.json); "
                "model hub names are not downloaded at run time"
            )
        return cls(load_causal_lm(path, dtype), path)  # a LoRA export comes back merged

    def to(self, device: str | torch.device) -> "ReferenceModel":
        self.lm.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.lm.get_output_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.get_output_embeddings().weight.dtype

    @property
    def vocab_size(self) -> int:
        return int(self.lm.get_output_embeddings().weight.shape[0])

    @torch.no_grad()
    def token_ce(self, input_ids: Tensor, attention_mask: Tensor | None, labels: Tensor,
                 chunk_size: int = 1024) -> Tensor:
        """``[B, S]`` float32 on the model's device: CE of predicting ``labels[b, j]`` from the
        tokens before it (see ``next_token_cross_entropy``); 0 at ignored labels and ``j = 0``.
        Inputs are moved to the model's device; the logits never exist in full."""
        device = self.device
        input_ids = input_ids.to(device)
        attention_mask = None if attention_mask is None else attention_mask.to(device)
        out = self._layout.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                    return_dict=True)
        head = self.lm.get_output_embeddings()
        return next_token_cross_entropy(out.last_hidden_state, head.weight, labels.to(device),
                                        bias=getattr(head, "bias", None), chunk_size=chunk_size)


def check_same_tokenizer(policy_tokenizer: Any, reference_tokenizer: Any, policy_path: str | Path,
                         reference_path: str | Path) -> None:
    """Excess loss subtracts two CEs of the same token in the same context: both models must
    split text into identical ids. Raises ConfigError naming both directories otherwise."""
    where = f"policy tokenizer ({policy_path}) and reference tokenizer ({reference_path})"
    pv, rv = policy_tokenizer.get_vocab(), reference_tokenizer.get_vocab()
    if pv != rv:
        differ = sorted(t for t in set(pv) | set(rv) if pv.get(t) != rv.get(t))
        examples = ", ".join(f"{t!r}: {pv.get(t)} vs {rv.get(t)}" for t in differ[:3])
        raise ConfigError(
            f"{where} have different vocabularies ({len(pv)} vs {len(rv)} tokens, {len(differ)} differ, "
            f"e.g. {examples}); per-token excess loss needs identical tokenization"
        )
    for name in ("bos_token_id", "eos_token_id"):
        p, r = getattr(policy_tokenizer, name, None), getattr(reference_tokenizer, name, None)
        if p != r:
            raise ConfigError(
                f"{where} disagree on {name}: {p} vs {r}; per-token excess loss needs identical tokenization"
            )
