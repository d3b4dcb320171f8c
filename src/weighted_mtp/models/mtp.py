"""Multi-token prediction on any HF causal LM, with parallel (Meta) or sequential (DeepSeek-V3) heads.

Head 1 is the LM's own last decoder block, so the wrapped model is still a plain HF model for
`generate`, evaluation and serving. `head_type` picks what heads 2..K are:

* ``parallel`` (Gloeckle et al., 2024): extra decoder blocks initialised as copies of the last
  block; every head reads the hidden state that enters the last block (the trunk output) and
  shares the final norm and the unembedding.
* ``sequential`` (DeepSeek-V3): head k+1 reads head k's normed output and the embedding of the
  token k ahead through two norms, a 2D -> D projection and one block (`models.sequential_heads`);
  the unembedding is shared. Families whose transformers config declares MTP layers save them
  in the layout transformers' `MtpModel` loads (`models.transformers_mtp`).

The forward pass returns per-head hidden states, never logits: the loss fuses the unembedding
with the cross-entropy in chunks, so [batch, seq, heads, vocab] logits never exist.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from weighted_mtp.errors import WMTPError
from weighted_mtp.models.hf_layout import find_layout
from weighted_mtp.models.lora import (LORA_CONFIG_FILE, add_policy_lora, base_layers, load_policy_lora, merge_adapters,
                                      save_policy_lora)
from weighted_mtp.models.sequential_heads import (HEAD_TYPES, block_call_arguments, build_sequential_heads,
                                                  run_sequential_heads)
from weighted_mtp.models.transformers_mtp import (
    checkpoint_has_mtp_weights,
    native_head_state,
    read_native_heads,
    set_num_mtp_layers,
    transformers_can_load,
    write_native_heads,
)
from weighted_mtp.models.value_head import ValueHead

HEADS_FILE = "mtp_heads.safetensors"
VALUE_HEAD_FILE = "value_head.safetensors"
MTP_CONFIG_FILE = "mtp_config.json"
MTP_FORMAT = "weighted_mtp.parallel_heads"  # the name predates sequential heads; `head_type` tells them apart
HEADS_LAYOUT_OWN = "weighted_mtp"  # extra_heads.* in mtp_heads.safetensors
HEADS_LAYOUT_TRANSFORMERS = "transformers"  # the family's own MTP layers in the HF weights


@dataclass
class MTPOutput:
    """head_hidden[k-1]: [B, S, D], head k's hidden state after the final norm (a sequential
    head's own post-norm); head k at position t predicts token t+k. trunk_hidden: [B, S, D], the
    hidden state entering the last block (None when head 1's state was given, see `forward`)."""

    head_hidden: list[Tensor]
    trunk_hidden: Tensor | None


class MTPModel(nn.Module):
    def __init__(self, lm: nn.Module, n_future_tokens: int, extra_heads: nn.ModuleList | None = None,
                 head_type: str = "parallel"):
        super().__init__()
        if n_future_tokens < 1:
            raise WMTPError(f"n_future_tokens must be >= 1, got {n_future_tokens}")
        if head_type not in HEAD_TYPES:
            raise WMTPError(f"head_type must be one of {', '.join(HEAD_TYPES)}, got {head_type!r}")
        for attr in ("final_logit_softcapping", "logit_scale"):
            if getattr(lm.config, attr, None) not in (None, 1.0):
                # The fused loss applies the plain unembedding; these models transform logits after it.
                raise WMTPError(f"{type(lm).__name__} sets config.{attr}; the fused MTP loss does not support it yet")
        self.lm = lm
        self.n_future_tokens = n_future_tokens
        self.head_type = head_type
        layout = find_layout(lm)
        if extra_heads is None and head_type == "sequential":
            extra_heads = build_sequential_heads(lm, n_future_tokens - 1)
        elif extra_heads is None:
            extra_heads = nn.ModuleList(copy.deepcopy(layout.layers[-1]) for _ in range(n_future_tokens - 1))
        if len(extra_heads) != n_future_tokens - 1:
            raise WMTPError(f"expected {n_future_tokens - 1} extra heads, got {len(extra_heads)}")
        self.extra_heads = extra_heads
        # Optional critic on the policy trunk (verifiable training with critic_mode: shared).
        self.value_head: nn.Module | None = None
        # Token ids drafts are restricted to in self-speculative decoding (None: the whole
        # vocabulary); set by stage mtp_heads from its training targets, saved with the model.
        self.draft_vocab: Tensor | None = None
        # LoRA settings and adapted modules while adapters are attached (`add_lora`), else None.
        self.lora: dict | None = None
        self._captured: tuple[tuple, dict] | None = None
        self._capturing = False
        layout.layers[-1].register_forward_pre_hook(self._capture_last_block_inputs, with_kwargs=True)

    @property
    def config(self):
        return self.lm.config

    @property
    def unembedding(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    @property
    def hidden_size(self) -> int:
        return self.unembedding.weight.shape[1]

    def _capture_last_block_inputs(self, module, args, kwargs):
        # The last block's call carries everything a block needs (masks, rotary embeddings,
        # position ids) in each architecture's own convention; the extra heads reuse it as is.
        if self._capturing:
            self._captured = (args, kwargs)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                head1: Tensor | None = None) -> MTPOutput:
        """Every head's hidden state. `head1` [B, S, D] (sequential heads only): head 1's normed
        state computed earlier by this same frozen LM; the trunk is then not run at all, only the
        heads (stage mtp_heads trains heads on states cached once)."""
        if head1 is not None:
            return MTPOutput(head_hidden=[head1, *self.sequential_from_head1(input_ids, attention_mask, head1)],
                             trunk_hidden=None)
        layout = find_layout(self.lm)
        self._captured, self._capturing = None, True
        try:
            out = layout.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True)
        finally:
            self._capturing = False
        if self._captured is None:
            raise WMTPError("the last decoder block was not called; cannot attach MTP heads")
        args, kwargs = self._captured
        self._captured = None
        if args:
            trunk, rest_args, rest_kwargs = args[0], args[1:], kwargs
        else:
            trunk, rest_args = kwargs["hidden_states"], ()
            rest_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        heads = [out.last_hidden_state]
        if self.head_type == "sequential":
            embeds = self.lm.get_input_embeddings()(input_ids)
            heads += run_sequential_heads(self.extra_heads, heads[0], embeds, rest_args, rest_kwargs)
            return MTPOutput(head_hidden=heads, trunk_hidden=trunk)
        for head in self.extra_heads:
            h = head(trunk, *rest_args, **rest_kwargs)
            if isinstance(h, tuple):
                h = h[0]
            heads.append(layout.final_norm(h))
        return MTPOutput(head_hidden=heads, trunk_hidden=trunk)

    def sequential_from_head1(self, input_ids: Tensor, attention_mask: Tensor | None, head1: Tensor) -> list[Tensor]:
        """Heads 2..K of a sequential model from head 1's (cached) normed hidden state [B, S, D],
        without running the trunk: for training heads on a frozen model whose head-1 states were
        computed once (stage mtp_heads). Equals ``forward(...).head_hidden[1:]`` given the same
        head-1 state."""
        if self.head_type != "sequential":
            raise WMTPError("sequential_from_head1 needs sequential heads (models.policy.head_type: sequential)")

        args, kwargs = block_call_arguments(self.lm, input_ids, attention_mask)
        if args:
            rest_args, rest_kwargs = args, kwargs
        else:
            rest_args = ()
            rest_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        embeds = self.lm.get_input_embeddings()(input_ids)
        return run_sequential_heads(self.extra_heads, head1, embeds, rest_args, rest_kwargs)

    def attach_value_head(self, head_type: str = "mlp", dropout: float = 0.0) -> None:
        """A value head on the policy trunk: it reads the trunk hidden state (through the shared
        final norm), so the value loss trains the trunk and this head but no policy head."""
        self.value_head = ValueHead(self.hidden_size, head_type, dropout).to(self.unembedding.weight.device)

    def values(self, out: MTPOutput) -> Tensor:
        """[B, S] fp32 values V(s_t) of the attached value head for a forward's output."""
        if self.value_head is None:
            raise WMTPError("this MTP model has no value head (critic_mode: shared attaches one)")
        return self.value_head(find_layout(self.lm).final_norm(out.trunk_hidden))

    def head_logits(self, hidden: Tensor) -> Tensor:
        """Logits for one head's hidden state; for evaluation on short inputs, never for training."""
        return self.unembedding(hidden)

    # ---- LoRA --------------------------------------------------------------------------------

    def add_lora(self, lora: dict | None = None) -> None:
        """peft LoRA adapters on the trunk's and every head's block projections (`lora`: peft's
        r / lora_alpha / lora_dropout / target_modules, None = every attention and MLP projection).
        Base weights, embeddings and the unembedding freeze; a value head stays trainable."""
        self.lora = add_policy_lora(self, lora)

    def merge_lora(self) -> None:
        """Folds the adapters into the base weights: a plain MTP model again, all of it trainable."""
        if self.lora is None:
            return
        merge_adapters(self)
        self.lora = None
        self.requires_grad_(True)

    # ---- persistence -------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, tokenizer=None) -> None:
        """An HF-loadable directory (`AutoModelForCausalLM.from_pretrained` gives head 1) plus
        the extra heads and `mtp_config.json`. The heads go to `mtp_heads.safetensors`, except
        sequential heads of a family whose transformers config declares MTP layers: those are
        written as that family's MTP layers into the HF weights (`models.transformers_mtp`), so
        transformers' `generate(..., use_mtp=True)` drafts with them. With LoRA, the files hold
        the base weights and the adapters go to their own files (`models.lora`); `wmtp export
        --merge` folds them in for tools that only read the HF files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        native, why_not = None, "parallel heads" if self.head_type == "parallel" else None
        saved_n_mtp = getattr(self.lm.config, "num_mtp_layers", None)
        with base_layers(self):  # the base model's own module tree, so its own parameter names
            if self.head_type == "sequential" and self.n_future_tokens > 1:
                why_not = transformers_can_load(self.lm, [])  # family check only, before converting
                if why_not is None:
                    native = native_head_state(self.lm, self.extra_heads)
                    why_not = transformers_can_load(self.lm, native)
                    native = native if why_not is None else None
            try:
                if native is not None:
                    set_num_mtp_layers(self.lm.config, self.n_future_tokens - 1)
                self.lm.save_pretrained(directory, safe_serialization=True)
            finally:
                if native is not None:
                    set_num_mtp_layers(self.lm.config, saved_n_mtp)
            state = {} if native is not None else {f"extra_heads.{k}": v.detach().contiguous().cpu()
                                                   for k, v in self.extra_heads.state_dict().items()}
        if native is not None:
            write_native_heads(directory, native)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        if state:
            save_file(state, directory / HEADS_FILE)
        meta = {"format": MTP_FORMAT, "version": 1, "n_future_tokens": self.n_future_tokens,
                "head_type": self.head_type,
                "heads_layout": HEADS_LAYOUT_TRANSFORMERS if native is not None else HEADS_LAYOUT_OWN,
                "heads_initialised_from": "last_decoder_block"}
        if self.head_type == "sequential" and native is None and self.n_future_tokens > 1:
            meta["transformers_mtp"] = f"not in the transformers layout: {why_not}"
        if self.draft_vocab is not None:
            meta["draft_vocab"] = [int(t) for t in self.draft_vocab.tolist()]
        if self.value_head is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()},
                      directory / VALUE_HEAD_FILE)
            meta["value_head"] = self.value_head.config()
        if self.lora is not None:
            save_policy_lora(self, directory)
            meta["lora"] = LORA_CONFIG_FILE
        (directory / MTP_CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, n_future_tokens: int | None = None,
                        dtype: torch.dtype = torch.float32, head_type: str | None = None) -> "MTPModel":
        """Loads an MTP export exactly (LoRA adapters included); or a plain HF causal LM with
        fresh heads (`head_type`, default parallel), except that sequential heads of a checkpoint
        whose family stores MTP layers (GLM-4.5, DeepSeek-V3, ...) are read from it. Asking for
        a different K or head type than a saved model has is an error."""
        from transformers import AutoModelForCausalLM

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise WMTPError(f"{directory}: not an HF model directory (no config.json)")
        lm = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        meta_path = directory / MTP_CONFIG_FILE
        if not meta_path.is_file():
            if head_type == "sequential" and checkpoint_has_mtp_weights(directory, lm):
                n_mtp = int(lm.config.num_mtp_layers)
                if n_future_tokens is not None and n_future_tokens != n_mtp + 1:
                    raise WMTPError(f"{directory} has {n_mtp} MTP layers (K = {n_mtp + 1}) but "
                                    f"models.policy.n_future_tokens={n_future_tokens}")
                model = cls(lm, n_mtp + 1, head_type="sequential")
                read_native_heads(directory, lm, model.extra_heads)
                return model
            return cls(lm, n_future_tokens or 1, head_type=head_type or "parallel")
        try:
            meta = json.loads(meta_path.read_text())
            saved_k = int(meta["n_future_tokens"])
            saved_type = str(meta.get("head_type", "parallel"))
            layout = str(meta.get("heads_layout", HEADS_LAYOUT_OWN))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise WMTPError(f"{meta_path}: unreadable MTP config ({type(e).__name__}: {e})") from e
        if n_future_tokens is not None and n_future_tokens != saved_k:
            raise WMTPError(
                f"{directory} has {saved_k} MTP heads but models.policy.n_future_tokens={n_future_tokens}"
            )
        if head_type is not None and head_type != saved_type and saved_k > 1:
            raise WMTPError(f"{directory} has {saved_type} MTP heads but models.policy.head_type={head_type}")
        model = cls(lm, saved_k, head_type=saved_type)
        if saved_k > 1 and layout == HEADS_LAYOUT_TRANSFORMERS:
            read_native_heads(directory, lm, model.extra_heads)
        elif saved_k > 1:
            heads_path = directory / HEADS_FILE
            if not heads_path.is_file():
                raise WMTPError(f"{heads_path}: not found, but {meta_path.name} declares {saved_k} MTP heads")
            try:
                state = load_file(heads_path)
            except Exception as e:  # noqa: BLE001 - SafetensorError, OSError: a bad file, not a bug
                raise WMTPError(f"{heads_path}: cannot read ({type(e).__name__}: {e})") from e
            prefix = "extra_heads."
            head_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            other = [k for k in state if not k.startswith(prefix)]
            try:
                missing, unexpected = model.extra_heads.load_state_dict(head_state, strict=False)
            except RuntimeError as e:  # size mismatches raise even with strict=False
                raise WMTPError(f"{heads_path}: {e}") from e
            unexpected = [prefix + k for k in unexpected] + other
            if missing or unexpected:
                raise WMTPError(
                    f"{heads_path}: missing keys {[prefix + k for k in missing][:3]}, "
                    f"unexpected keys {unexpected[:3]}"
                )
            model.extra_heads.to(dtype)
        if "lora" in meta or (directory / LORA_CONFIG_FILE).is_file():
            # Declared in one place but not the other is a damaged export: loading fails naming the file.
            model.lora = load_policy_lora(model, directory)
        if "value_head" in meta:
            model._load_value_head(directory / VALUE_HEAD_FILE, meta["value_head"])
        if meta.get("draft_vocab") is not None:
            vocab = torch.tensor(meta["draft_vocab"], dtype=torch.long)
            if vocab.dim() != 1 or len(vocab) == 0 or int(vocab.min()) < 0 or int(vocab.max()) >= lm.config.vocab_size:
                raise WMTPError(f"{meta_path}: draft_vocab must be token ids in [0, {lm.config.vocab_size})")
            model.draft_vocab = vocab
        return model

    def _load_value_head(self, path: Path, config: dict) -> None:
        try:
            head = ValueHead(**config)
            head.load_state_dict(load_file(path))
        except Exception as e:  # noqa: BLE001 - a missing/corrupt file or a config mismatch
            raise WMTPError(f"{path}: cannot load the value head declared in {MTP_CONFIG_FILE} ({type(e).__name__}: {e})") from e
        self.value_head = head
