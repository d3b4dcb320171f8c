"""Inference with a trained CLaRa model, shared by the demo and the PDF evaluation: compress
documents once (offline, as the paper does), score them with the query reasoner, take the hard
top-k and decode greedily from the injected memory vectors plus the text question."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from weighted_mtp.clara.tokens import INSTRUCTIONS, encode_generator, encode_texts


@torch.no_grad()
def compress_texts(model, texts: Sequence[str], batch_size: int = 64, adapter: str = "compressor") -> torch.Tensor:
    """[N, l, d] memory of each text (the compressor, or the query reasoner for questions)."""
    width = model.cfg.doc_max_length
    parts = []
    for start in range(0, len(texts), batch_size):
        enc = encode_texts(model.tokenizer, list(texts[start:start + batch_size]), width, model.tokens)
        parts.append(model.compress(enc["input_ids"], enc["attention_mask"], adapter=adapter).memory.float())
    return torch.cat(parts) if parts else torch.empty(0)


def rank_documents(model, questions: Sequence[str], memory: torch.Tensor, question_max_length: int = 48) -> torch.Tensor:
    """[Q, N] cosine scores of each question's query-reasoner vector against every document."""
    return query_vectors(model, questions, question_max_length) @ F.normalize(memory.flatten(1).float(), dim=-1).T


@torch.no_grad()
def answer(model, questions: Sequence[str | None], slots: torch.Tensor | None, *, instruction: str = "answer",
           max_new_tokens: int = 32, batch_size: int = 32) -> list[str]:
    """Greedy answers given per-question memory slots [Q, k, l, d] (None: zero-shot, no documents)."""
    texts: list[str] = []
    l, d = model.cfg.n_mem, model.hidden_size
    for start in range(0, len(questions), batch_size):
        qs = list(questions[start:start + batch_size])
        mem = slots[start:start + batch_size] if slots is not None else torch.zeros(len(qs), 0, l, d)
        batch = encode_generator(model.tokenizer, model.tokens, instruction=INSTRUCTIONS[instruction], questions=qs,
                                 n_docs=mem.shape[1], targets=None, max_length=model.cfg.generator_max_length)
        texts.extend(model.generate(batch, mem.to(model.device), max_new_tokens=max_new_tokens))
    return [t.strip() for t in texts]


def recall_at_k(scores: torch.Tensor, gold: Sequence[Sequence[int]], ks: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    """Recall@k of ranked candidates against gold indices (questions without gold are skipped)."""
    order = scores.argsort(dim=1, descending=True)
    rows = [(order[i].tolist(), set(g)) for i, g in enumerate(gold) if g]
    out = {}
    for k in ks:
        if k <= scores.shape[1] and rows:
            out[f"recall_at_{k}"] = sum(bool(g & set(ranked[:k])) for ranked, g in rows) / len(rows)
    return out


@torch.no_grad()
def query_vectors(model, questions: Sequence[str], question_max_length: int = 48, batch_size: int = 64) -> torch.Tensor:
    """[Q, l*d] query-reasoner vectors, L2-normalised."""
    out = []
    for start in range(0, len(questions), batch_size):
        enc = encode_texts(model.tokenizer, list(questions[start:start + batch_size]), question_max_length,
                           model.tokens)
        out.append(F.normalize(model.query_vectors(enc["input_ids"], enc["attention_mask"]).float(), dim=-1))
    return torch.cat(out)


def stage3_recall(model, examples, ks: Sequence[int] = (1, 3), question_max_length: int = 48) -> dict[str, float]:
    """Recall@k of the query reasoner over each stage-3 example's own candidates."""
    if not examples:
        return {}
    D = len(examples[0].docs)
    memory = compress_texts(model, [d for x in examples for d in x.docs]).view(len(examples), D, -1)
    q = query_vectors(model, [x.question for x in examples], question_max_length)
    scores = torch.einsum("qe,qde->qd", q, F.normalize(memory, dim=-1))
    return recall_at_k(scores, [x.pos_index for x in examples], ks)
