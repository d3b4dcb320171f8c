"""Records -> padded tensors for SFT-style and pairwise objectives.

Labels follow the HF convention: aligned with input_ids (the model or loss shifts them), -100
wherever no loss should be taken. Every objective in the project weights *response* tokens, so
the prompt/response boundary must be exact; that is why prompt and response are tokenized
separately and concatenated, instead of tokenizing the joined text and guessing where the
response starts (BPE merges across the boundary would move it)."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.data.records import STEP_TASKS, Record
from weighted_mtp.errors import ConfigError, DataError


ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


def format_prompt(record: Record) -> str:
    """Alpaca template, as used by the project we replace, so its checkpoints see the prompts
    they were trained on. A blank `input` selects the template without an Input section."""
    if record.input.strip():
        return ALPACA_PROMPT_WITH_INPUT.format(instruction=record.instruction, input=record.input)
    return ALPACA_PROMPT.format(instruction=record.instruction)


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


_PREFIX_CACHE: "weakref.WeakKeyDictionary[Any, list[int]]" = weakref.WeakKeyDictionary()


def special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer itself puts before text (Llama's BOS; nothing for
    GPT-2 or Qwen). Found by probing rather than reading `bos_token_id`, because many
    tokenizers define a BOS they never add. Suffix tokens some tokenizers append (an EOS with
    `add_eos_token`) are deliberately not kept: the prompt must not end the sequence."""
    try:
        return _PREFIX_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    probe = "Hello world"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    prefix: list[int] = []
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            prefix = list(with_special[:start])
            break
    try:
        _PREFIX_CACHE[tokenizer] = prefix
    except TypeError:
        pass
    return prefix


def pad_token_id(tokenizer: Any) -> int:
    """Padding is masked out everywhere, so any id works; EOS is the usual stand-in for
    causal-LM tokenizers that ship without a pad token."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return eos_token_id(tokenizer)


def eos_token_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ConfigError("tokenizer has no eos_token; responses must end with one so the model learns to stop")
    return int(tokenizer.eos_token_id)


def _assemble(prefix: list[int], prompt: list[int], response: list[int], eos: int,
              max_length: int) -> TokenizedExample:
    """Truncation policy: cut the end of the response first. If the prompt alone does not fit,
    keep the special prefix and the prompt's *last* tokens (the part right before the response,
    e.g. the "### Response:" header) so that exactly one response token remains: the row still
    contributes a target instead of becoming all -100, which some losses divide by."""
    response = response + [eos]
    n_prompt = len(prefix) + len(prompt)
    truncated = n_prompt + len(response) > max_length
    if truncated:
        if n_prompt < max_length:
            response = response[: max_length - n_prompt]
        else:
            keep = max_length - 1 - len(prefix)
            prompt = prompt[len(prompt) - keep:] if keep > 0 else []
            response = response[:1]
    head = prefix + prompt
    return TokenizedExample(
        input_ids=head + response,
        labels=[IGNORE_INDEX] * len(head) + response,
        truncated=truncated,
    )


def _check_max_length(tokenizer: Any, max_length: int) -> None:
    if max_length < len(special_prefix(tokenizer)) + 2:
        raise ConfigError(f"max_length {max_length} leaves no room for a prompt token and a response token")


def tokenize_batch(tokenizer: Any, records: Sequence[Record], max_length: int) -> list[TokenizedExample]:
    """Batched form of `tokenize_example` (one tokenizer call for prompts, one for responses)."""
    _check_max_length(tokenizer, max_length)
    prefix = special_prefix(tokenizer)
    eos = eos_token_id(tokenizer)
    prompts = tokenizer([format_prompt(r) for r in records], add_special_tokens=False, verbose=False)["input_ids"]
    responses = tokenizer([r.output for r in records], add_special_tokens=False, verbose=False)["input_ids"]
    return [_assemble(prefix, list(p), list(r), eos, max_length) for p, r in zip(prompts, responses)]


def tokenize_example(tokenizer: Any, record: Record, max_length: int) -> TokenizedExample:
    return tokenize_batch(tokenizer, [record], max_length)[0]


def _pad(examples: Sequence[TokenizedExample], length: int, pad_id: int) -> dict[str, torch.Tensor]:
    n = len(examples)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    for i, ex in enumerate(examples):
        k = len(ex.input_ids)
        input_ids[i, :k] = torch.tensor(ex.input_ids, dtype=torch.long)
        attention_mask[i, :k] = 1
        labels[i, :k] = torch.tensor(ex.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class _Collator:
    def __init__(self, tokenizer: Any, max_length: int, pad_to_multiple_of: int | None = None):
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        _check_max_length(tokenizer, max_length)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_id = pad_token_id(tokenizer)

    def _length(self, longest: int) -> int:
        """Dynamic padding: the batch's longest row, rounded up for tensor-core friendly shapes
        but never past max_length (rows are already at most max_length long)."""
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            return max(longest, min(math.ceil(longest / m) * m, self.max_length))
        return longest


def response_positions(example: TokenizedExample) -> list[int]:
    """Positions j with a target (labels[j] != -100), in order: where a per-target column
    such as ref_ce goes."""
    return [j for j, label in enumerate(example.labels) if label != IGNORE_INDEX]


def place_ref_ce(records: Sequence[Record], examples: Sequence[TokenizedExample], length: int,
                 max_length: int) -> torch.Tensor | None:
    """float32 [B, length]: each row's cached reference CE at its response target positions,
    0 elsewhere; None when no record carries one. A longer column is cut to the targets left
    after truncation (computed at a larger max_length); a shorter one cannot be right."""
    present = [r.ref_ce is not None for r in records]
    if not any(present):
        return None
    if not all(present):
        missing = records[present.index(False)].task_id
        raise DataError(
            f"batch mixes rows with and without 'ref_ce': task_id {missing!r} has none (rows skipped by "
            "`wmtp data ref-ce --correct-only` carry no ref_ce; sample correct rows only, or regenerate without it)"
        )
    out = torch.zeros(len(records), length, dtype=torch.float32)
    for i, (record, example) in enumerate(zip(records, examples)):
        positions = response_positions(example)
        if len(positions) > len(record.ref_ce):
            raise DataError(
                f"task_id {record.task_id!r}: 'ref_ce' has {len(record.ref_ce)} values but the row has "
                f"{len(positions)} response target tokens at dataset.max_length={max_length}; regenerate the "
                "column with `wmtp data ref-ce` at the same dataset.max_length and tokenizer"
            )
        if positions:
            out[i, positions] = torch.tensor(record.ref_ce[: len(positions)], dtype=torch.float32)
    return out


def step_task_index(records: Sequence[Record]) -> torch.Tensor | None:
    """long [B]: each row's position in STEP_TASKS, or None when no record has a step_task."""
    present = [r.step_task is not None for r in records]
    if not any(present):
        return None
    if not all(present):
        missing = records[present.index(False)].task_id
        raise DataError(f"batch mixes rows with and without 'step_task': task_id {missing!r} has none "
                        "(StepER step datasets label every row init/exp/agg)")
    return torch.tensor([STEP_TASKS.index(r.step_task) for r in records], dtype=torch.long)


class SFTCollator(_Collator):
    """Batch of Records -> input_ids / attention_mask / labels [B, L], is_correct [B] and the
    number of truncated rows (logged, so a too-small max_length shows up in the metrics).
    Records carrying a cached reference CE also give ref_ce [B, L] float32, indexed by the
    target position like the loss weights (see `place_ref_ce`)."""

    def __call__(self, records: Sequence[Record]) -> dict[str, Any]:
        if not records:
            raise ValueError("SFTCollator got an empty batch")
        examples = tokenize_batch(self.tokenizer, records, self.max_length)
        length = self._length(max(len(e.input_ids) for e in examples))
        batch: dict[str, Any] = _pad(examples, length, self.pad_id)
        batch["is_correct"] = torch.tensor([r.is_correct for r in records], dtype=torch.bool)
        batch["task_ids"] = [r.task_id for r in records]  # which rows were trained on, for audits
        batch["n_truncated"] = sum(e.truncated for e in examples)
        ref_ce = place_ref_ce(records, examples, length, self.max_length)
        if ref_ce is not None:
            batch["ref_ce"] = ref_ce
        step_task = step_task_index(records)
        if step_task is not None:
            batch["step_task"] = step_task
        return batch


class PairwiseCollator(_Collator):
    """Batch of (correct, incorrect) Record pairs -> pos_* and neg_* tensors.

    Both sides are padded to one common length (the longest row on either side) so a model can
    score them in a single forward pass on torch.cat([pos, neg]); the extra padding is masked.
    `pos_length` (the correct side's own longest row) lets a policy loss that reads only the
    correct side drop the extra columns without a device sync; `pos_ref_ce` is the correct side's
    cached reference CE when its records carry one (Rho-1 on pairs)."""

    def __call__(self, pairs: Sequence[tuple[Record, Record]]) -> dict[str, Any]:
        if not pairs:
            raise ValueError("PairwiseCollator got an empty batch")
        examples = tokenize_batch(self.tokenizer, [p for p, _ in pairs] + [n for _, n in pairs], self.max_length)
        pos, neg = examples[: len(pairs)], examples[len(pairs):]
        length = self._length(max(len(e.input_ids) for e in examples))
        batch: dict[str, Any] = {}
        for side, exs in (("pos", pos), ("neg", neg)):
            for key, tensor in _pad(exs, length, self.pad_id).items():
                batch[f"{side}_{key}"] = tensor
        batch["pos_length"] = max(len(e.input_ids) for e in pos)
        batch["pos_task_ids"] = [p.task_id for p, _ in pairs]
        batch["neg_task_ids"] = [n.task_id for _, n in pairs]
        ref_ce = place_ref_ce([p for p, _ in pairs], pos, length, self.max_length)
        if ref_ce is not None:
            batch["pos_ref_ce"] = ref_ce
        batch["n_truncated"] = sum(e.truncated for e in examples)
        return batch


# The name the project we replace (and its users) know this collator by.
PairwiseDataCollator = PairwiseCollator
