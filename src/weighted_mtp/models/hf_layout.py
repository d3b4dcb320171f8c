"""Find the decoder blocks and the final norm inside any HF causal LM. Architectures name them
differently (`model.layers` + `model.norm` in Llama/Qwen2/Mistral, `transformer.h` + `ln_f` in
GPT-2, `gpt_neox.layers` + `final_layer_norm`), and MTP heads need both."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from weighted_mtp.errors import WMTPError

_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm")


@dataclass
class DecoderLayout:
    backbone: nn.Module  # the base model (embeddings, blocks, final norm), without the LM head
    layers: nn.ModuleList  # the decoder blocks, in order
    final_norm: nn.Module


def find_layout(lm: nn.Module) -> DecoderLayout:
    backbone = getattr(lm, "base_model", None)
    if backbone is None or backbone is lm:
        raise WMTPError(f"{type(lm).__name__} exposes no base model; MTP heads need a decoder-only causal LM")
    n_layers = getattr(lm.config, "num_hidden_layers", None)
    lists = [m for m in backbone.children() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if n_layers is not None:
        lists = [m for m in lists if len(m) == n_layers] or lists
    if len(lists) != 1:
        raise WMTPError(
            f"cannot find the decoder blocks of {type(lm).__name__}: "
            f"{len(lists)} candidate ModuleLists under {type(backbone).__name__}"
        )
    norm = next((getattr(backbone, n) for n in _NORM_NAMES if isinstance(getattr(backbone, n, None), nn.Module)), None)
    if norm is None:
        raise WMTPError(
            f"cannot find the final norm of {type(backbone).__name__} (looked for {', '.join(_NORM_NAMES)})"
        )
    return DecoderLayout(backbone=backbone, layers=lists[0], final_norm=norm)
