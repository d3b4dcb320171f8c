"""Sequential MTP heads in the checkpoint layout of the model family itself, for families whose
transformers config declares MTP layers (GLM-4.5, DeepSeek-V3, ...): transformers' `MtpModel`
(and with it `generate(..., use_mtp=True)`) then loads them from the exported directory as if
it were the upstream checkpoint, and vLLM/SGLang-style loaders find them where they look.

The layout is DeepSeek-V3's: MTP depth i is decoder layer `num_hidden_layers + i` of the
checkpoint, holding `enorm`, `hnorm`, `eh_proj`, `shared_head.norm` and the block's own weights
in the family's on-disk naming (transformers' reverse weight conversion is applied, so e.g.
fused MoE experts are written per expert like the upstream files). The shared embedding and
unembedding are not duplicated. `config.json` gets `num_mtp_layers` (written under the family's
own name, e.g. `num_nextn_predict_layers`).

Reading goes through transformers' own `MtpModel.from_pretrained`, so an upstream checkpoint
and our export are read by the same code. transformers finds MTP weights with per-family
patterns that name absolute layer numbers (GLM-4.5: 46 or 92, DeepSeek-V3: 61); a model with
another layer count cannot be read that way, and its heads are saved in our own file instead
(`mtp_heads.safetensors`, see `models.mtp`).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

from weighted_mtp.errors import WMTPError
from weighted_mtp.files import atomic_path, atomic_write_text
from weighted_mtp.models.hf_layout import find_layout
from weighted_mtp.models.sequential_heads import declares_mtp_layers

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
MTP_SHARD = "model-mtp.safetensors"


def _layers_prefix(lm: nn.Module) -> str:
    layers = find_layout(lm).layers
    name = next((n for n, m in lm.named_modules() if m is layers), None)
    if name is None:
        raise WMTPError(f"cannot find the decoder blocks of {type(lm).__name__} by name")
    return name


def native_head_state(lm: nn.Module, heads: nn.ModuleList) -> dict[str, Tensor]:
    """The heads' tensors under the family's checkpoint names (layer num_hidden_layers + i)."""
    from transformers.core_model_loading import revert_weight_conversion

    prefix, n_layers = _layers_prefix(lm), lm.config.num_hidden_layers
    state: dict[str, Tensor] = {}
    for i, head in enumerate(heads):
        base = f"{prefix}.{n_layers + i}."
        for key, value in head.state_dict().items():
            if key.startswith("mtp_block."):
                key = key[len("mtp_block."):]
            elif key.startswith("post_norm."):
                key = "shared_head.norm." + key[len("post_norm."):]
            state[base + key] = value.detach().contiguous().cpu()
    return {k: v.contiguous() for k, v in revert_weight_conversion(lm, state).items()}


def transformers_can_load(lm: nn.Module, keys) -> str | None:
    """None if transformers' `MtpModel` would find every key; else why not, in words."""
    if not declares_mtp_layers(lm.config):
        return f"{type(lm.config).__name__} declares no MTP layers"
    from transformers.modeling_layers import MtpModel

    try:
        pattern = MtpModel.get_mtp_weights_regex(lm)
    except ValueError as e:
        return str(e)
    missed = [k for k in keys if pattern.search(k) is None]
    if missed:
        return (f"transformers finds {type(lm).__name__}'s MTP weights by the pattern {pattern.pattern!r}, "
                f"which misses {missed[0]} (a model with {lm.config.num_hidden_layers} layers)")
    return None


def set_num_mtp_layers(config, n: int) -> None:
    config.num_mtp_layers = n
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if text is not config:
        text.num_mtp_layers = n


def write_native_heads(directory: Path, state: dict[str, Tensor]) -> None:
    """Adds the head tensors to an HF directory `lm.save_pretrained` just wrote: into the single
    `model.safetensors` (rewritten under a temporary name, then renamed over it), or as one more
    shard listed in the index of a sharded checkpoint."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    index_path = directory / SAFE_INDEX
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        index["weight_map"].update(dict.fromkeys(state, MTP_SHARD))
        save_file(state, directory / MTP_SHARD, metadata={"format": "pt"})
        atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True) + "\n")
        return
    path = directory / SAFE_WEIGHTS
    if not path.is_file():
        raise WMTPError(f"{directory}: no {SAFE_WEIGHTS} or {SAFE_INDEX} to add the MTP heads to")
    with safe_open(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata() or {"format": "pt"}
    clash = sorted(set(tensors) & set(state))
    if clash:
        raise WMTPError(f"{path}: already holds {clash[0]}; cannot add MTP heads over trunk weights")
    tensors.update(state)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def checkpoint_has_mtp_weights(directory: Path, lm: nn.Module) -> bool:
    """Whether the HF checkpoint in `directory` holds MTP weights transformers would load."""
    if not declares_mtp_layers(lm.config) or not (getattr(lm.config, "num_mtp_layers", 0) or 0):
        return False
    from safetensors import safe_open
    from transformers.modeling_layers import MtpModel

    try:
        pattern = MtpModel.get_mtp_weights_regex(lm)
    except ValueError:
        return False
    index_path = directory / SAFE_INDEX
    if (directory / SAFE_WEIGHTS).is_file():
        with safe_open(directory / SAFE_WEIGHTS, framework="pt") as f:
            keys = list(f.keys())
    elif index_path.is_file():
        keys = list(json.loads(index_path.read_text())["weight_map"])
    else:
        return False
    return any(pattern.search(k) for k in keys)


def read_native_heads(directory: Path, lm: nn.Module, heads: nn.ModuleList) -> None:
    """Loads MTP layers 0..len(heads)-1 of `directory` into `heads` with transformers' own
    reader (`MtpModel.from_pretrained`), so the family's weight conversions apply."""
    import torch
    from transformers.modeling_layers import MtpModel

    n = len(heads)
    saved = getattr(lm.config, "num_mtp_layers", None)
    if saved != n:
        raise WMTPError(f"{directory / 'config.json'}: declares num_mtp_layers={saved}, expected {n}")
    lm.config.name_or_path = str(directory)
    try:
        reader = MtpModel.from_pretrained(lm, device_map={"": next(lm.parameters()).device})
    except (RuntimeError, ValueError, OSError) as e:
        raise WMTPError(f"{directory}: cannot read the MTP layers with transformers ({type(e).__name__}: {e})") from e
    with torch.no_grad():
        for i, head in enumerate(heads):
            state = reader.layers[i].state_dict()
            missing, unexpected = head.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise WMTPError(f"{directory}: MTP layer {i} does not match a sequential head: missing "
                                f"{missing[:3]}, unexpected {unexpected[:3]}")
