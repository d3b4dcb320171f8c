"""A critic: an HF backbone (no LM head) plus an fp32 value head, giving one value per token.

The backbone comes from any HF causal-LM directory, including an MTP export (its trunk + head 1;
extra MTP heads are ignored). Three ways to train it:
  frozen  - backbone fixed and in eval mode, run under no_grad; only the value head trains. The
            save references the backbone by path, so a checkpoint is just the head.
  last_n  - the last n decoder blocks and the final norm train too; the save holds only those.
  lora    - peft LoRA adapters on the backbone's linear layers; the save holds the adapter, and
            loading checks that every saved adapter tensor came back (the project this replaces
            silently dropped the FFN adapters).
The LM head is dropped so unused parameters never reach the optimizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.hf_layout import find_layout
from weighted_mtp.models.load import load_causal_lm
from weighted_mtp.models.lora import load_adapter_state, lora_settings, read_safetensors, wrap_lora
from weighted_mtp.models.value_head import ValueHead

MODES = ("frozen", "last_n", "lora")
CRITIC_CONFIG_FILE = "critic_config.json"
# The loss that trained the value head decides what its outputs mean: bce gives logits of
# P(correct); mse and lambda_return regress the 0/1 reward, so their values are on the
# probability scale; pairwise (Bradley-Terry) values have an arbitrary level and scale.
TRAINING_LOSSES = ("bce", "mse", "lambda_return", "pairwise")
PROBABILITY_LOSSES = ("bce", "mse", "lambda_return")
VALUE_HEAD_FILE = "value_head.safetensors"
BACKBONE_TRAINABLE_FILE = "backbone_trainable.safetensors"
ADAPTER_DIR = "adapter"
CRITIC_FORMAT = "weighted_mtp.critic"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class CriticModel(nn.Module):
    def __init__(self, backbone: nn.Module, value_head: ValueHead, *, backbone_dir: str, mode: str,
                 n_unfrozen_layers: int = 0, lora: dict | None = None, dtype: torch.dtype = torch.float32,
                 training_loss: str | None = None):
        super().__init__()
        self.training_loss = training_loss  # None: a checkpoint that did not record it
        self.backbone = backbone
        self.value_head = value_head
        self.backbone_dir, self.mode, self.n_unfrozen_layers = backbone_dir, mode, n_unfrozen_layers
        self.lora, self.dtype = lora, dtype

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def build(cls, backbone_dir: str | Path, *, head_type: str = "mlp", dropout: float = 0.0, mode: str = "frozen",
              n_unfrozen_layers: int = 0, lora: dict | None = None,
              dtype: torch.dtype = torch.float32, training_loss: str | None = None) -> "CriticModel":
        if mode not in MODES:
            raise WMTPError(f"unknown critic mode {mode!r}; valid modes: {', '.join(MODES)}")
        if training_loss is not None and training_loss not in TRAINING_LOSSES:
            raise WMTPError(f"unknown critic training loss {training_loss!r}; known: {', '.join(TRAINING_LOSSES)}")
        backbone, n_layers = _load_backbone(backbone_dir, dtype)
        hidden_size = backbone.config.hidden_size
        try:
            head = ValueHead(hidden_size, head_type, dropout)
        except ValueError as e:
            raise WMTPError(str(e)) from e
        lora_cfg = None
        if mode == "frozen":
            backbone.requires_grad_(False)
        elif mode == "last_n":
            if not 1 <= n_unfrozen_layers <= n_layers:
                raise WMTPError(f"critic mode last_n needs 1 <= n_unfrozen_layers <= {n_layers} "
                                f"(the backbone's layers), got {n_unfrozen_layers}")
            backbone.requires_grad_(False)
            for module in _last_n_modules(backbone, n_unfrozen_layers):
                module.requires_grad_(True)
        else:
            lora_cfg = lora_settings(backbone, lora)
            backbone = wrap_lora(backbone, lora_cfg)
        model = cls(backbone, head, backbone_dir=str(backbone_dir), mode=mode, n_unfrozen_layers=n_unfrozen_layers,
                    lora=lora_cfg, dtype=dtype, training_loss=training_loss)
        return model.train()

    # ---- forward -----------------------------------------------------------------------------

    def train(self, mode: bool = True) -> "CriticModel":
        """A frozen backbone stays in eval mode (no dropout noise in fixed features)."""
        super().train(mode)
        if self.mode == "frozen":
            self.backbone.eval()
        return self

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True)
        if self.mode == "frozen":
            with torch.no_grad():
                return self.backbone(**kwargs).last_hidden_state.detach()
        return self.backbone(**kwargs).last_hidden_state

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """[B, S] fp32 values, one per position (the value of the prefix ending there)."""
        return self.value_head(self.hidden_states(input_ids, attention_mask))

    @property
    def values_are_probabilities(self) -> bool:
        """Whether ``credit_values`` are P(correct)-scale numbers that may be mixed with a 0/1 reward."""
        return self.training_loss in PROBABILITY_LOSSES

    def credit_values(self, values: Tensor) -> Tensor:
        """The values as token credit is computed from them: a BCE critic's logits become
        probabilities (sigmoid), every other critic's values are used as they are."""
        return torch.sigmoid(values) if self.training_loss == "bce" else values

    # ---- persistence -------------------------------------------------------------------------

    def config_dict(self) -> dict:
        return {"format": CRITIC_FORMAT, "version": 1, "backbone_dir": self.backbone_dir, "mode": self.mode,
                "n_unfrozen_layers": self.n_unfrozen_layers, "lora": self.lora, "dtype": _dtype_name(self.dtype),
                "training_loss": self.training_loss, **self.value_head.config()}

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CRITIC_CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        save_file(_cpu_state(self.value_head.state_dict()), directory / VALUE_HEAD_FILE)
        if self.mode == "last_n":
            state = {n: p for n, p in self.backbone.named_parameters() if p.requires_grad}
            save_file(_cpu_state(state), directory / BACKBONE_TRAINABLE_FILE)
        elif self.mode == "lora":
            self.backbone.save_pretrained(directory / ADAPTER_DIR, safe_serialization=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, backbone_dir: str | Path | None = None,
                        dtype: torch.dtype | None = None) -> "CriticModel":
        """Restores a `save_pretrained` directory exactly. `backbone_dir` overrides the saved path
        (a moved checkpoint); `dtype` defaults to the saved one."""
        directory = Path(directory)
        cfg_path = directory / CRITIC_CONFIG_FILE
        if not cfg_path.is_file():
            raise WMTPError(f"{cfg_path}: not found; not a critic checkpoint")
        try:
            cfg = json.loads(cfg_path.read_text())
            if cfg.get("format") != CRITIC_FORMAT:
                raise ValueError(f"format {cfg.get('format')!r}, expected {CRITIC_FORMAT!r}")
            if dtype is None:
                dtype = getattr(torch, cfg.get("dtype", "float32"))
            model = cls.build(backbone_dir or cfg["backbone_dir"], head_type=cfg["head_type"],
                              dropout=cfg["dropout"], mode=cfg["mode"], n_unfrozen_layers=cfg["n_unfrozen_layers"],
                              lora=cfg["lora"], dtype=dtype, training_loss=cfg.get("training_loss"))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise WMTPError(f"{cfg_path}: unreadable critic config ({type(e).__name__}: {e})") from e
        model.backbone_dir = cfg["backbone_dir"] if backbone_dir is None else str(backbone_dir)
        head_state = read_safetensors(directory / VALUE_HEAD_FILE)
        _load_exact(model.value_head, head_state, directory / VALUE_HEAD_FILE,
                    expected=set(model.value_head.state_dict()))
        if model.mode == "last_n":
            path = directory / BACKBONE_TRAINABLE_FILE
            expected = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
            _load_exact(model.backbone, read_safetensors(path), path, expected)
        elif model.mode == "lora":
            _load_lora(model, directory / ADAPTER_DIR)
        return model


# ---- helpers ---------------------------------------------------------------------------------


def _load_backbone(backbone_dir: str | Path, dtype: torch.dtype) -> tuple[nn.Module, int]:
    if not (Path(backbone_dir) / "config.json").is_file():
        raise WMTPError(f"{backbone_dir}: not an HF model directory (no config.json)")
    lm = load_causal_lm(Path(backbone_dir), dtype)  # a LoRA policy export: adapters merged
    layout = find_layout(lm)
    # Keep the base model only; the LM head (and the rest of `lm`) is garbage once this returns.
    return layout.backbone, len(layout.layers)


def _last_n_modules(backbone: nn.Module, n: int) -> list[nn.Module]:
    layout = find_layout(_AsLM(backbone))
    return [*layout.layers[-n:], layout.final_norm]


class _AsLM:
    """Lets `find_layout` (written for causal LMs) read a bare base model."""

    def __init__(self, backbone: nn.Module):
        self.base_model, self.config = backbone, backbone.config


def _load_lora(model: CriticModel, adapter_dir: Path) -> None:
    """Every saved adapter tensor must match a module: a target the backbone lacks must fail,
    not silently stay at init."""
    path = adapter_dir / "adapter_model.safetensors"
    load_adapter_state(model.backbone, read_safetensors(path), path)


def _load_exact(module: nn.Module, state: dict[str, Tensor], path: Path, expected: set[str]) -> None:
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WMTPError(f"{path}: missing keys {missing[:3]}, unexpected keys {unexpected[:3]}")
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # size mismatches raise even with strict=False
        raise WMTPError(f"{path}: {e}") from e


def _cpu_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}
