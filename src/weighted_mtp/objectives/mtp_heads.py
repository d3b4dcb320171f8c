"""Stage `mtp_heads`: train the sequential MTP heads of a frozen model (the trunk and head 1
never change), e.g. to give a released model like SmolLM2 heads for speculative decoding, or to
refresh heads gone stale after post-training.

Data (`mtp_heads.source`, see `mtp_heads.distill`): the frozen model's own greedy continuations
of the training prompts (self-distillation) or the rows' responses; either way head 1's hidden
states are computed once and cached, and each step runs the heads only
(`MTPModel.forward(..., head1=...)`), a few percent of the trunk's cost.

Loss: the fused MTP cross-entropy of heads 2..K (head 1's scale is 0: it is not computed),
`training.loss.head_scales` weighting the others. With `mtp_heads.draft_vocab_size` the softmax
ranges over the draft vocabulary only (the most frequent training targets), the same candidates
the heads draft from at inference; targets outside it are ignored. Validation reports each
head's CE and its top-1 agreement with the target (`acc_head{k}`), the acceptance rate a
teacher-forced draft would have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from weighted_mtp.cache import cache_root
from weighted_mtp.config.load import check
from weighted_mtp.config.registry import register_objective
from weighted_mtp.config.schema import Config
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.data.collate import format_prompt
from weighted_mtp.data.records import iter_records
from weighted_mtp.data.sources import resolve_data_path
from weighted_mtp.errors import ConfigError, DataError
from weighted_mtp.eval.generate import eos_token_ids
from weighted_mtp.eval.prompts import chat_prompt
from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
from weighted_mtp.models.load import DTYPES, load_causal_lm, load_policy, load_tokenizer, resolve_model_path
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.mtp_heads.distill import (
    DistillItem,
    draft_vocabulary,
    greedy_continuations,
    load_set,
    save_set,
    set_key,
    teacher_forced,
)
from weighted_mtp.objectives.base import ObjectiveDefaults, ObjectiveOutput


@dataclass
class MTPHeadsConfig:
    """The `mtp_heads:` config section."""

    # Stage mtp_heads (heads 2..K of a frozen model). self: the model's own greedy
    # continuations of the training prompts (self-distillation); data: the rows' responses.
    source: Literal["self", "data"] = "self"
    # How a row becomes a prompt: the tokenizer's chat template (instruct models) or Alpaca.
    prompt_format: Literal["chat", "alpaca"] = "chat"
    # source self: tokens generated per prompt (an EOS ends a continuation earlier).
    max_new_tokens: int = 128
    # Rows per generation / head-1 pass while building the cached training set.
    generation_batch_size: int = 32
    # Drafts, and the heads' training softmax, range over this many most frequent training
    # targets (saved with the model; verification always uses the whole vocabulary). null: all.
    draft_vocab_size: Optional[int] = 8192

    def validate(self, source: str) -> None:
        check(self.max_new_tokens >= 1, source, "mtp_heads.max_new_tokens", "must be >= 1")
        check(self.generation_batch_size >= 1, source, "mtp_heads.generation_batch_size", "must be >= 1")
        check(self.draft_vocab_size is None or self.draft_vocab_size >= 1, source, "mtp_heads.draft_vocab_size",
              "must be >= 1 or null")


def _prompt_text(record, prompt_format: str, tokenizer) -> str:
    if prompt_format == "chat":
        return chat_prompt(record.instruction + (f"\n\n{record.input}" if record.input.strip() else ""), tokenizer)

    return format_prompt(record)


@register_objective("mtp_heads", section=("mtp_heads", MTPHeadsConfig))
class MTPHeadsObjective(ObjectiveDefaults):
    batch_kind = "mtp_heads"
    val_batch_kind = "mtp_heads"
    own_data = True  # cached head-1 states of the frozen model, built from the Record rows

    def __init__(self, cfg: Config):
        self.cfg, self.h = cfg, cfg.mtp_heads
        policy = cfg.models.policy
        if policy.head_type != "sequential":
            raise ConfigError("stage mtp_heads trains sequential heads on cached head-1 states: set "
                              "models.policy.head_type: sequential")
        if policy.n_future_tokens < 2:
            raise ConfigError("stage mtp_heads needs heads to train: models.policy.n_future_tokens must be >= 2")
        if cfg.training.use_lora:
            raise ConfigError("stage mtp_heads trains the heads fully and freezes the rest: set training.use_lora: false")
        scales = cfg.training.loss.head_scales
        self.scales = [0.0] + ([1.0] * (policy.n_future_tokens - 1) if scales is None else list(scales[1:]))
        self._source: tuple[Path, Any] | None = None  # (model directory, tokenizer)
        self.vocab: Tensor | None = None  # draft vocabulary (sorted token ids) or None
        self._weights: dict = {}

    # ---- model -------------------------------------------------------------------------------

    def _model_source(self) -> tuple[Path, Any]:
        if self._source is None:
            path = resolve_model_path(self.cfg.models.policy.path, self.cfg)
            self._source = (path, load_tokenizer(path))
        return self._source

    def _freeze(self, model: MTPModel) -> MTPModel:
        model.lm.requires_grad_(False)
        model.extra_heads.requires_grad_(True)
        model.draft_vocab = self.vocab
        return model

    def build_model(self):
        model, tokenizer, path = load_policy(self.cfg)
        return self._freeze(model), tokenizer, path

    def load_model(self, directory: Path):
        policy = self.cfg.models.policy
        model = MTPModel.from_pretrained(directory, n_future_tokens=policy.n_future_tokens,
                                         dtype=DTYPES[policy.dtype], head_type="sequential")
        return self._freeze(model)

    # ---- data --------------------------------------------------------------------------------

    def load_items(self, which: str) -> tuple[Path, list[DistillItem]]:
        key = "dataset.train" if which == "train" else "dataset.validation"
        source = resolve_data_path(getattr(self.cfg.dataset, "train" if which == "train" else "validation"),
                                   self.cfg, key)
        n = self.cfg.data_sampling.n_samples if which == "train" else self.cfg.data_sampling.val_n_samples
        rows = [r for r in iter_records(source) if r.is_correct or not self.cfg.data_sampling.correct_only]
        if self.h.source == "self":  # one prompt per problem: the model writes its own answer
            rows = list({r.problem_id: r for r in rows}.values())
        random.Random(self.cfg.data_sampling.seed + (0 if which == "train" else 1)).shuffle(rows)
        rows = rows[:n]
        if not rows:
            raise DataError(f"{source}: no rows to train heads on ({key})")
        model_dir, tokenizer = self._model_source()
        texts = [(_prompt_text(r, self.h.prompt_format, tokenizer), r.output if self.h.source == "data" else "")
                 for r in rows]
        settings = {"source": self.h.source, "max_new_tokens": self.h.max_new_tokens,
                    "max_length": self.cfg.dataset.max_length, "dtype": self.cfg.models.policy.dtype}
        path = cache_root() / "mtp_heads" / f"{which}-{set_key(model_dir, texts, settings)}.safetensors"
        if path.is_file():
            items = load_set(path)
        else:
            items = self._build(load_causal_lm(model_dir, DTYPES[self.cfg.models.policy.dtype]), tokenizer, texts)
            save_set(items, path)
        if which == "train":
            self.vocab = draft_vocabulary(items, self.h.draft_vocab_size, len(tokenizer))
        return path, items

    def _build(self, lm, tokenizer, texts: list[tuple[str, str]]) -> list[DistillItem]:
        def say(msg: str) -> None:
            print(f"mtp_heads data: {msg}", flush=True)

        max_len = self.cfg.dataset.max_length
        prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in texts]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        was = lm.training
        lm.eval()
        try:
            if self.h.source == "self":
                prompts = [p[-max(1, max_len - self.h.max_new_tokens):] for p in prompts]
                return greedy_continuations(lm, prompts, self.h.max_new_tokens, set(eos_token_ids(lm, tokenizer)),
                                            pad, self.h.generation_batch_size, say)
            rows = []
            for p, (_, response) in zip(prompts, texts):
                r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                rows.append(((p + r)[:max_len], min(len(p), max_len - 1)))
            return teacher_forced(lm, rows, pad, self.h.generation_batch_size, say)
        finally:
            lm.train(was)

    def make_collator(self, tokenizer, which: str):
        return HeadsCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                             self.vocab)

    # ---- the step ----------------------------------------------------------------------------

    def _unembedding(self, model) -> Tensor:
        weight = model.unembedding.weight
        if self.vocab is None:
            return weight
        key = (weight.data_ptr(), weight.device)
        if key not in self._weights:  # frozen: slice once per device
            self._weights = {key: weight.detach().index_select(0, self.vocab.to(weight.device)).contiguous()}
        return self._weights[key]

    def __call__(self, model, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput:
        out = model(batch["input_ids"], batch["attention_mask"], head1=batch["head1"])
        weight = self._unembedding(model)
        result = mtp_cross_entropy(out.head_hidden, weight, batch["labels"], None,
                                   normalization=self.cfg.training.loss.normalization,
                                   chunk_size=self.cfg.training.loss.chunk_size, head_scales=self.scales)
        metrics, sums = {"loss": result.loss.detach()}, {}
        K = len(out.head_hidden)
        for k in range(1, K):
            ce, n = result.per_head_ce[k], result.per_head_tokens[k]
            metrics[f"ce_head{k + 1}"] = ce
            sums[f"ce_head{k + 1}"] = (ce.nan_to_num(0.0) * n, n.to(ce.dtype))
        n_all = result.per_head_tokens[1:].sum().to(torch.float32)
        sums["loss"] = (result.loss.detach() * n_all, n_all)
        if not training:
            with torch.no_grad():
                for k in range(1, K):
                    targets = batch["labels"][:, k + 1:]
                    valid = targets != IGNORE_INDEX
                    logits = out.head_hidden[k][:, : targets.shape[1]][valid] @ weight.t()
                    hits = (logits.argmax(-1) == targets[valid]).sum().to(torch.float32)
                    sums[f"acc_head{k + 1}"] = (hits, valid.sum().to(torch.float32))
        return ObjectiveOutput(loss=result.loss, metrics=metrics, sums=sums)


class HeadsCollator:
    """DistillItems -> right-padded input_ids / attention_mask / head1, and labels: the target
    tokens (prompt and padding IGNORE_INDEX) as indices into the draft vocabulary (targets
    outside it IGNORE_INDEX), or token ids when there is none."""

    def __init__(self, pad_id: int, vocab: Tensor | None):
        self.pad_id = pad_id
        self.remap = None
        if vocab is not None:
            self.remap = torch.full((int(vocab.max()) + 1,), IGNORE_INDEX, dtype=torch.long)
            self.remap[vocab] = torch.arange(len(vocab))

    def _labels(self, ids: Tensor) -> Tensor:
        if self.remap is None:
            return ids
        inside = ids < len(self.remap)
        return torch.where(inside, self.remap[ids.clamp(max=len(self.remap) - 1)], IGNORE_INDEX)

    def __call__(self, items: list[DistillItem]) -> dict[str, Tensor]:
        width = max(len(it.input_ids) for it in items)
        dim = items[0].head1.shape[1]
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, IGNORE_INDEX)
        head1 = torch.zeros(len(items), width, dim)
        for j, it in enumerate(items):
            n = len(it.input_ids)
            ids[j, :n], mask[j, :n], head1[j, :n] = it.input_ids, 1, it.head1
            labels[j, it.prompt_len:n] = self._labels(it.input_ids[it.prompt_len:])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "head1": head1}
