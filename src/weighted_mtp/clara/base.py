"""The embedded CLaRa base model: the blank StepER student (a micro Llama whose tokenizer knows the
embedded world's names), briefly pretrained as a plain language model, then cached. CLaRa freezes
its base and trains only LoRA adapters, so the base must already model the language of the
documents, the way Mistral-7B models English (clara.md section 6.1).

It learns that language from the CLaRa world's own entities with every fact dealt out again at
random (`PRETRAIN_SHUFFLES` times, never a true fact): each subject is seen with many objects, so
the base knows every name token yet no fact, the way a real LM knows the words of a new document
but not its content. Measured on the two alternatives:
- pretrained on the true documents, the generator answers from its weights, the memory vectors
  carry nothing it needs and retrieval has nothing to learn (stage-2 memory gain fell to zero);
- pretrained on another world, 809 of the 1229 token types of the documents (every name) were
  never seen: their tied embeddings stay random and the frozen base can neither read nor write
  them, so names did not pass through the memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from weighted_mtp.cache import cache_root
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.files import building_cache_dir
from weighted_mtp.models.load import load_tokenizer
from weighted_mtp.models.world_student import ensure_steper_student
from weighted_mtp.world.world import RELATIONS, build_world

BASE_VERSION = 3
PRETRAIN = dict(steps=1500, batch_size=32, max_length=96, learning_rate=3e-3, seed=0)
PRETRAIN_SHUFFLES = 8  # counterfactual copies of the world in the base's corpus


def pretraining_texts(world_seed: int, shuffles: int = PRETRAIN_SHUFFLES) -> list[str]:
    """The base's LM corpus: `shuffles` counterfactual copies of world `world_seed`. In each, every
    relation's objects are permuted among its facts and a sentence that happens to be true is
    dropped; the sentences are then grouped into one profile per subject, as the documents are."""
    import numpy as np

    world = build_world(seed=world_seed)
    true = {f.sentence for f in world.facts}
    rng = np.random.default_rng([world_seed, 1])
    by_relation: dict[str, list[int]] = {}
    for i, fact in enumerate(world.facts):
        by_relation.setdefault(fact.relation, []).append(i)
    texts = []
    for _ in range(shuffles):
        dealt: dict[int, str] = {}
        for rows in by_relation.values():
            for i, j in zip(rows, rng.permutation(rows)):
                dealt[i] = world.facts[int(j)].object
        by_subject: dict[str, list[str]] = {}
        for i, fact in enumerate(world.facts):
            sentence = RELATIONS[fact.relation].template.format(s=fact.subject, o=dealt[i])
            if sentence not in true:
                by_subject.setdefault(fact.subject, []).append(sentence)
        texts += [" ".join(sentences) for sentences in by_subject.values()]
    return texts


def pretrain_lm(model, tokenizer, texts: list[str], *, steps: int, batch_size: int, max_length: int,
                learning_rate: float, seed: int) -> list[float]:
    """Next-token pretraining on `texts` (sampled with `seed`); returns the loss per step."""
    generator = torch.Generator().manual_seed(seed)
    encoded = [ids[:max_length] for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    eos = tokenizer.eos_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * max(0.1, 1 - s / steps))
    losses = []
    model.train()
    for _ in range(steps):
        rows = [encoded[i] + [eos] for i in torch.randint(len(encoded), (batch_size,), generator=generator).tolist()]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full_like(ids, IGNORE_INDEX)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            labels[i, :len(r)] = ids[i, :len(r)]
            mask[i, :len(r)] = 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def ensure_clara_base(world_seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    student = ensure_steper_student(world_seed=world_seed)
    key = json.dumps({"v": BASE_VERSION, "student": student.name, "pretrain": PRETRAIN, "world_seed": world_seed,
                      "pretrain_shuffles": PRETRAIN_SHUFFLES},
                     sort_keys=True)
    out = cache_root() / "models" / f"clara-base-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (out / "config.json").is_file():
        return out
    model = AutoModelForCausalLM.from_pretrained(student)
    tokenizer = load_tokenizer(student)
    torch.manual_seed(PRETRAIN["seed"])
    losses = pretrain_lm(model, tokenizer, pretraining_texts(world_seed), **PRETRAIN)
    with building_cache_dir(out, lambda d: (d / "config.json").is_file()) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "pretraining.json").write_text(json.dumps({**PRETRAIN, "first_loss": losses[0],
                                                          "last_loss": sum(losses[-20:]) / 20}, indent=2))
    return out
