"""LoRA through `peft`, shared by the critic (a `PeftModel` around its backbone) and the MTP policy
(adapters injected in place, so `MTPModel.lm` stays a plain HF model and the last block's
forward pre-hook keeps firing).

Policy adapters sit on the target projections of every decoder block of the LM (head 1 included)
and of every extra MTP head; everything else is frozen except a value head. They are saved
beside the *base* weights, which keep their usual names, in files of their own:
  lora_config.json          rank, alpha, dropout, target names, and the modules actually adapted
  lora_adapter.safetensors  every lora_A / lora_B tensor, keyed by its name in the MTP model
Loading re-adapts exactly the recorded modules and insists that every saved tensor, and no other,
comes back: the project this replaces silently dropped its FFN adapters at reload.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.hf_layout import find_layout

LORA_DEFAULTS = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": None}
# Llama/Qwen2/Mistral projections, then GPT-2's fused Conv1D layers, then a sequential MTP head's
# 2D -> D input projection; only the ones present are used.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                        "c_attn", "c_proj", "c_fc", "eh_proj")
ADAPTER = "default"  # peft's adapter name; saved keys leave it out, as peft's own files do
LORA_CONFIG_FILE = "lora_config.json"
LORA_WEIGHTS_FILE = "lora_adapter.safetensors"
LORA_FORMAT = "weighted_mtp.lora"


def lora_options(cfg) -> dict:
    """peft's names for a `training.lora` config section."""
    return {"r": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout, "target_modules": cfg.target_modules}


def lora_settings(scope: nn.Module, lora: dict | None, owner: str | None = None) -> dict:
    """Complete LoRA settings; target_modules None means every default projection in `scope`."""
    owner = owner or type(scope).__name__
    lora = dict(lora or {})
    unknown = sorted(set(lora) - set(LORA_DEFAULTS))
    if unknown:
        raise WMTPError(f"unknown lora keys {unknown}; valid keys: {', '.join(LORA_DEFAULTS)}")
    cfg = {**LORA_DEFAULTS, **lora}
    present = {name.rsplit(".", 1)[-1] for name, m in scope.named_modules() if is_linear(m)}
    if cfg["target_modules"] is None:
        cfg["target_modules"] = [t for t in DEFAULT_LORA_TARGETS if t in present]
        if not cfg["target_modules"]:
            raise WMTPError(f"{owner} has none of the default LoRA targets "
                            f"{', '.join(DEFAULT_LORA_TARGETS)}; set lora.target_modules")
    else:
        cfg["target_modules"] = list(cfg["target_modules"])
        missing = [t for t in cfg["target_modules"] if t not in present]
        if missing:
            raise WMTPError(f"lora.target_modules {missing} are not linear layers of {owner}; "
                            f"candidates: {', '.join(sorted(present))}")
    return cfg


def is_linear(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def _peft_config(model: nn.Module, cfg: dict, targets: list[str]):
    import peft
    from transformers.pytorch_utils import Conv1D

    # GPT-2's Conv1D stores weights transposed; peft needs to be told (it warns and guesses otherwise).
    leaves = {t.rsplit(".", 1)[-1] for t in targets}
    fan_in_fan_out = any(isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in leaves for n, m in model.named_modules())
    return peft.LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
                           target_modules=list(targets), fan_in_fan_out=fan_in_fan_out)


def wrap_lora(backbone: nn.Module, cfg: dict) -> nn.Module:
    """A `PeftModel` around a bare backbone (the critic's layout)."""
    import peft

    return peft.get_peft_model(backbone, _peft_config(backbone, cfg, cfg["target_modules"]))


# ---- adapter state, common to both layouts -------------------------------------------------------


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def adapted_modules(model: nn.Module) -> list[str]:
    """Names of the modules carrying an adapter."""
    return sorted(_lora_layers(model))


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """Every adapter tensor (live, not copies), keyed as peft saves them (no adapter name)."""
    return {k.replace(f".{ADAPTER}", ""): v for k, v in model.state_dict(keep_vars=True).items() if "lora_" in k}


def load_adapter_state(model: nn.Module, saved: dict[str, Tensor], path: Path) -> None:
    """Copies `saved` into the model's adapters; any missing or unexpected key is an error naming
    `path`, and every tensor is checked after the copy (nothing stays at its initial value)."""
    current = adapter_state(model)
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if missing or unexpected:
        raise WMTPError(f"{path}: adapter does not match the model: missing {missing[:3]} "
                        f"({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)})")
    with torch.no_grad():
        for key, value in saved.items():
            if current[key].shape != value.shape:
                raise WMTPError(f"{path}: {key} has shape {tuple(value.shape)}, "
                                f"the model's adapter {tuple(current[key].shape)}")
            current[key].copy_(value)
    bad = [k for k, v in saved.items() if not torch.equal(current[k].detach().cpu(), v.to(current[k].dtype))]
    if bad:
        raise WMTPError(f"{path}: {len(bad)} adapter tensors did not load, e.g. {bad[:3]}")


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@contextlib.contextmanager
def base_layers(model: nn.Module):
    """Temporarily puts each adapted layer's base layer back in its place: inside, the model has
    its original module tree and parameter names (for saving base weights as usual)."""
    layers = _lora_layers(model)
    for name, layer in layers.items():
        _replace(model, name, layer.get_base_layer())
    try:
        yield model
    finally:
        for name, layer in layers.items():
            _replace(model, name, layer)


def merge_adapters(model: nn.Module) -> None:
    """Folds every adapter into its base weight and removes the adapter layers, in place."""
    for name, layer in _lora_layers(model).items():
        layer.merge(safe_merge=True)
        _replace(model, name, layer.get_base_layer())


# ---- the MTP policy --------------------------------------------------------------------------


def add_policy_lora(model: nn.Module, lora: dict | None, *, targets: list[str] | None = None) -> dict:
    """Injects adapters into the decoder blocks of `model.lm` and every `model.extra_heads` block
    and freezes all else but a value head. `targets` (full module names) re-adapts exactly the
    modules of a saved config; by default every block projection named in target_modules."""
    import peft

    layout = find_layout(model.lm)
    blocks = nn.ModuleList([*layout.layers, *model.extra_heads])
    cfg = lora_settings(blocks, lora, owner=f"the decoder blocks of {type(model.lm).__name__}")
    if targets is None:
        inside = {id(m) for m in blocks.modules()}
        targets = [n for n, m in model.named_modules()
                   if id(m) in inside and is_linear(m) and n.rsplit(".", 1)[-1] in cfg["target_modules"]]
    if adapted_modules(model):
        raise WMTPError("this model already has LoRA adapters; merge them before adding new ones")
    try:
        peft.inject_adapter_in_model(_peft_config(model, cfg, targets), model, adapter_name=ADAPTER)
    except ValueError as e:  # peft: a target module that does not exist
        raise WMTPError(f"cannot add LoRA adapters: {e}") from e
    model.__dict__.pop("peft_config", None)  # peft's bookkeeping; `model.lora` is ours
    if getattr(model, "value_head", None) is not None:
        model.value_head.requires_grad_(True)
    return {**cfg, "adapted_modules": adapted_modules(model)}


def save_policy_lora(model: nn.Module, directory: Path) -> None:
    cfg = {"format": LORA_FORMAT, "version": 1, **model.lora}
    (directory / LORA_CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter_state(model).items()},
              directory / LORA_WEIGHTS_FILE)


def load_policy_lora(model: nn.Module, directory: Path) -> dict:
    """Re-adapts the modules a `save_policy_lora` directory names and loads every adapter tensor."""
    cfg_path, weights_path = directory / LORA_CONFIG_FILE, directory / LORA_WEIGHTS_FILE
    try:
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("format") != LORA_FORMAT:
            raise ValueError(f"format {cfg.get('format')!r}, expected {LORA_FORMAT!r}")
        recorded = list(cfg.pop("adapted_modules"))
        settings = {k: cfg[k] for k in LORA_DEFAULTS}
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise WMTPError(f"{cfg_path}: unreadable LoRA config ({type(e).__name__}: {e})") from e
    try:
        lora = add_policy_lora(model, settings, targets=recorded)
    except WMTPError as e:
        raise WMTPError(f"{cfg_path}: {e}") from e
    if lora["adapted_modules"] != sorted(recorded):
        got = set(lora["adapted_modules"])
        raise WMTPError(f"{cfg_path}: adapted modules differ from the recorded ones: missing "
                        f"{sorted(set(recorded) - got)[:3]}, unexpected {sorted(got - set(recorded))[:3]}")
    load_adapter_state(model, read_safetensors(weights_path), weights_path)
    return lora


def read_safetensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise WMTPError(f"{path}: not found")
    try:
        return load_file(path)
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError: a bad file, not a bug
        raise WMTPError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
