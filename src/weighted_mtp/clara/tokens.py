"""CLaRa's special tokens and the two fixed-width encodings built from them (tokenizer only, so
collators can run on CPU workers without the model).

The compressor reads "<ENC>" + BOS + doc + EOS, LEFT padded to doc_max_length + 3 tokens as
upstream does: left padding keeps the appended memory slots right after the last real token.
The generator reads a fixed text template in which each document is a slot of placeholders
"<MEM0>..<MEM{l-1}><SEP>"; the model overwrites the placeholder embeddings with memory vectors.
Prompt and target are tokenized separately so the label boundary is exact (see data/collate.py),
and the placeholders are inserted as ids, never parsed out of text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.data.collate import eos_token_id, pad_token_id, special_prefix
from weighted_mtp.errors import ConfigError

ENC, SEP = "<ENC>", "<SEP>"
# The generator's instruction per kind of example (stage 1: qa / paraphrase; stages 2-3: answer).
INSTRUCTIONS = {
    "qa": "Generate questions that cover the key information of the background and answer them.",
    "paraphrase": "Paraphrase the background information.",
    "answer": "Answer the question as briefly as possible using the background.",
}


def mem_token(i: int) -> str:
    return f"<MEM{i}>"


@dataclass(frozen=True)
class ClaraTokens:
    mem_ids: tuple[int, ...]
    enc_id: int
    sep_id: int

    @property
    def n_mem(self) -> int:
        return len(self.mem_ids)

    @property
    def all_ids(self) -> tuple[int, ...]:
        return (*self.mem_ids, self.enc_id, self.sep_id)


def _names(n_mem: int) -> list[str]:
    if n_mem < 1:
        raise ConfigError(f"the number of memory tokens must be >= 1, got {n_mem}")
    return [mem_token(i) for i in range(n_mem)] + [ENC, SEP]


def _lookup(tokenizer: Any, names: list[str]) -> dict[str, int | None]:
    vocab = tokenizer.get_vocab()
    return {n: vocab.get(n) for n in names}


def add_clara_tokens(tokenizer: Any, n_mem: int) -> ClaraTokens:
    """Adds <MEM0>..<MEM{n_mem-1}>, <ENC>, <SEP> as special tokens (kept whole, dropped when
    decoding with skip_special_tokens). Tokens already present keep their ids, so adding twice
    (or to a saved CLaRa tokenizer) changes nothing."""
    names = _names(n_mem)
    missing = [n for n, i in _lookup(tokenizer, names).items() if i is None]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return clara_tokens(tokenizer, n_mem)


def clara_tokens(tokenizer: Any, n_mem: int) -> ClaraTokens:
    """The ids of the CLaRa tokens of a tokenizer that already has them."""
    names = _names(n_mem)
    ids = _lookup(tokenizer, names)
    missing = [n for n, i in ids.items() if i is None]
    if missing:
        raise ConfigError(f"tokenizer lacks the CLaRa tokens {missing[:4]} ({len(missing)} of {len(names)}); "
                          f"add them with add_clara_tokens(tokenizer, {n_mem})")
    return ClaraTokens(mem_ids=tuple(ids[mem_token(i)] for i in range(n_mem)), enc_id=ids[ENC], sep_id=ids[SEP])


def n_memory_tokens(doc_max_length: int, compression_rate: int) -> int:
    """l = doc_max_length // compression_rate, as upstream (a remainder is simply dropped)."""
    if compression_rate < 1:
        raise ConfigError(f"compression_rate must be >= 1, got {compression_rate}")
    n = doc_max_length // compression_rate
    if n < 1:
        raise ConfigError(f"doc_max_length {doc_max_length} // compression_rate {compression_rate} = {n}: "
                          "no memory token; lower the compression rate or allow longer documents")
    return n


def _ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(x) for x in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]


def _pad(rows: list[list[int]], width: int, pad: int, *, left: bool, labels: list[list[int]] | None = None) -> dict:
    n = len(rows)
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels is not None:
        out["labels"] = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        input_ids[i, span] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, span] = 1
        if labels is not None:
            out["labels"][i, span] = torch.tensor(labels[i], dtype=torch.long)
    return out


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int, tokens: ClaraTokens) -> dict:
    """Compressor (and query reasoner) input: [N, max_length + 3], left padded, fixed width."""
    if max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    bos = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
    eos = eos_token_id(tokenizer)
    rows = [[tokens.enc_id, *bos, *ids[:max_length], eos] for ids in _ids(tokenizer, texts)]
    return _pad(rows, max_length + 3, pad_token_id(tokenizer), left=True)


def generator_prompt(tokenizer: Any, tokens: ClaraTokens, instruction: str, question: str | None,
                     n_docs: int) -> list[int]:
    """"{instruction}\\nBackground:\\n" + n_docs slots + ["\\n\\nQuestion: {q}"] + "\\nAnswer:"."""
    if n_docs < 0:
        raise ConfigError(f"n_docs must be >= 0, got {n_docs}")
    tail = ("" if question is None else f"\n\nQuestion: {question}") + "\nAnswer:"
    head_ids, tail_ids = _ids(tokenizer, [f"{instruction}\nBackground:\n", tail])
    slot = [*tokens.mem_ids, tokens.sep_id]
    return [*special_prefix(tokenizer), *head_ids, *(slot * n_docs), *tail_ids]


def encode_generator(tokenizer: Any, tokens: ClaraTokens, *, instruction: str | Sequence[str],
                     questions: Sequence[str | None], n_docs: int, targets: Sequence[str] | None,
                     max_length: int) -> dict:
    """Generator batch with `input_ids`, `attention_mask`, `labels` (-100 on prompt and padding).
    `instruction` is one for all rows or one per row (stage 1 mixes QA and paraphrase rows).
    With targets (training): " {target}" + EOS after the prompt, right padded, the target cut to
    fit max_length (the placeholders never are). Without (generation): prompts only, left padded."""
    instructions = [instruction] * len(questions) if isinstance(instruction, str) else list(instruction)
    if len(instructions) != len(questions) or (targets is not None and len(targets) != len(questions)):
        raise ConfigError(f"encode_generator: {len(questions)} questions, {len(instructions)} instructions, "
                          f"{'no' if targets is None else len(targets)} targets")
    prompts = [generator_prompt(tokenizer, tokens, i, q, n_docs) for i, q in zip(instructions, questions)]
    room = max_length - (0 if targets is None else 1)  # training needs at least one target token
    for p in prompts:
        if len(p) > room:
            raise ConfigError(f"generator prompt is {len(p)} tokens ({n_docs} docs x {tokens.n_mem + 1} slot "
                              f"tokens included) but max_length is {max_length}"
                              + ("" if targets is None else " and the target needs at least 1")
                              + "; raise generator_max_length or shorten the instruction/question")
    if targets is None:
        width = max((len(p) for p in prompts), default=0)
        batch = _pad(prompts, width, pad_token_id(tokenizer), left=True)
        batch["labels"] = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        return batch
    eos = eos_token_id(tokenizer)
    rows, labels = [], []
    for p, t in zip(prompts, _ids(tokenizer, [f" {t}" for t in targets])):
        answer = [*t, eos][:max_length - len(p)]  # a cut target loses its EOS: it did not end there
        rows.append(p + answer)
        labels.append([IGNORE_INDEX] * len(p) + answer)
    width = max((len(r) for r in rows), default=0)
    return _pad(rows, width, pad_token_id(tokenizer), left=False, labels=labels)
