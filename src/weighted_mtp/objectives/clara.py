"""CLaRa's three stages as objectives of the one training loop (the loop shuffles, batches,
steps, validates, checkpoints and logs; these say what a batch costs).

stage 1 (compression pretraining): the generator reproduces a document's QA pairs or a
  paraphrase from its memory vectors alone; loss = CE + mse_weight * MSE(mean document hidden
  state, mean memory state), both from the same compressor pass. Compressor, generator and the
  memory embeddings train.
stage 2 (instruction tuning): question + k compressed documents -> answer; CE + mse_weight * MSE.
stage 3 (end to end): the compressor is frozen (its pass runs under no_grad); the query reasoner
  scores the candidates by cosine between flattened memory vectors, a straight-through top-k picks
  k of them, and the ONLY loss is the generator's next-token CE on the answer. Recall@k against
  `pos_index` is logged, never trained on. `clara.train_query_reasoner: false` is the control."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F

from weighted_mtp.clara.data import read_stage
from weighted_mtp.clara.model import ClaraConfig, ClaraModel
from weighted_mtp.clara.resources import resolve_base_model, resolve_clara_data
from weighted_mtp.clara.tokens import INSTRUCTIONS, clara_tokens, encode_generator, encode_texts
from weighted_mtp.clara.topk import differentiable_topk, select, topk_indices
from weighted_mtp.config.load import check
from weighted_mtp.config.registry import OBJECTIVES, register_objective
from weighted_mtp.config.schema import Config
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.errors import ConfigError, DataError, WMTPError
from weighted_mtp.objectives.base import ObjectiveDefaults, ObjectiveOutput


@dataclass
class ClaraSectionConfig:
    """The `clara:` config section (every CLaRa stage reads it)."""

    base_model: str = "embedded:clara-base"
    init_from: Optional[str] = None
    doc_max_length: int = 64
    question_max_length: int = 48
    generator_max_length: int = 256
    compression_rate: int = 16
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    mse_weight: float = 0.1
    top_k: int = 1
    temperature: float = 0.02
    train_query_reasoner: bool = True
    train_generator: bool = True
    fresh_generator: bool = False
    world_seed: int = 0
    train_docs: int = 96
    # Chunks of ordinary prose (the standard library's pydoc topics) mixed into embedded:clara's
    # stages 1-2, so the compressor learns to read text, not the world's templates. 0: none.
    text_docs: int = 0
    memory_norm: Literal["none", "standardize"] = "none"

    def validate(self, source: str) -> None:
        check(self.top_k >= 1, source, "clara.top_k", "must be >= 1")
        check(self.train_docs >= 1, source, "clara.train_docs", "must be >= 1")
        check(self.text_docs >= 0, source, "clara.text_docs", "must be >= 0")
        check(self.compression_rate >= 1, source, "clara.compression_rate", "must be >= 1")
        check(self.temperature >= 0, source, "clara.temperature", "must be >= 0")


class ClaraObjective(ObjectiveDefaults):
    batch_kind = "clara"
    val_batch_kind = "clara"
    own_data = True  # CLaRa's stage JSONL files, not Record rows
    stage: int  # 1, 2 or 3, declared by the class registered for each stage (below)

    def __init__(self, cfg: Config):
        self.cfg, self.c = cfg, cfg.clara
        self.stage = OBJECTIVES[cfg.experiment.stage].stage  # the registry knows each stage's number
        self.model_cfg = None  # the built or loaded model's ClaraConfig: its shapes rule the batches

    # ---- model -------------------------------------------------------------------------------

    def _trainable(self) -> tuple[set[str], bool]:
        if self.stage == 3:
            if not (self.c.train_query_reasoner or self.c.train_generator):
                raise ConfigError("clara.train_query_reasoner and clara.train_generator are both false: "
                                  "stage 3 would train nothing")
            return ({"query_reasoner"} if self.c.train_query_reasoner else set()) | (
                {"generator"} if self.c.train_generator else set()), False
        return {"compressor", "generator"}, True

    def build_model(self):
        if self.c.init_from:
            source = Path(self.c.init_from)
            model = ClaraModel.from_pretrained(source)
            if self.stage == 2 and self.c.fresh_generator:
                model.reset_adapter("generator")
            if self.stage == 3:
                model.init_query_reasoner_from_compressor()
        else:
            source = resolve_base_model(self.c.base_model, self.cfg)
            model = ClaraModel.build(source, ClaraConfig(
                doc_max_length=self.c.doc_max_length, compression_rate=self.c.compression_rate,
                lora_rank=self.c.lora_rank, lora_alpha=self.c.lora_alpha, lora_dropout=self.c.lora_dropout,
                generator_max_length=self.c.generator_max_length, memory_norm=self.c.memory_norm))
            if self.c.memory_norm == "standardize":
                self._calibrate(model)
            if self.stage == 3:
                model.init_query_reasoner_from_compressor()
        model.set_trainable(*self._trainable())
        self.model_cfg = model.cfg
        return model, model.tokenizer, source

    def _calibrate(self, model, n_docs: int = 32) -> None:
        """memory_norm standardize: statistics of the fresh compressor's memory of the first
        `n_docs` distinct training documents."""
        _, items = self.load_items("train")
        docs = list(dict.fromkeys(d for x in items for d in ((x.doc,) if self.stage == 1 else x.docs)))[:n_docs]
        enc = encode_texts(model.tokenizer, docs, model.cfg.doc_max_length, model.tokens)
        model.calibrate_memory(enc["input_ids"], enc["attention_mask"])

    def load_model(self, directory: Path):
        model = ClaraModel.from_pretrained(directory)
        model.set_trainable(*self._trainable())
        self.model_cfg = model.cfg
        return model

    # ---- data --------------------------------------------------------------------------------

    def load_items(self, which: str) -> tuple[Path, list]:
        key = "dataset.train" if which == "train" else "dataset.validation"
        path = resolve_clara_data(getattr(self.cfg.dataset, "train" if which == "train" else "validation"),
                                  self.stage, which, self.cfg, key)
        items = read_stage(path, self.stage)
        if not items:
            raise DataError(f"{path}: no examples ({key})")
        if self.stage == 3:
            sizes = {len(x.docs) for x in items}
            if len(sizes) > 1:
                raise DataError(f"{path}: every stage-3 example needs the same number of candidate docs, found "
                                f"{sorted(sizes)}")
            if self.c.top_k > sizes.pop():
                raise ConfigError(f"config key 'clara.top_k' is {self.c.top_k}, more than the candidates per question")
        return path, items

    def make_collator(self, tokenizer, which: str):
        if self.model_cfg is None:
            raise WMTPError("ClaraObjective.make_collator needs the model first (build_model or load_model): "
                            "the model's doc_max_length and compression_rate shape the batches")
        return ClaraCollator(tokenizer, self.stage, self.c, self.model_cfg)

    # ---- the step ----------------------------------------------------------------------------

    def __call__(self, model, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput:
        gen = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
        n_targets = (batch["labels"] != IGNORE_INDEX).sum().to(torch.float32)
        if self.stage in (1, 2):
            out = model.compress(batch["doc_input_ids"], batch["doc_attention_mask"])
            memory = out.memory.view(batch["n_rows"], batch["n_docs"], *out.memory.shape[1:])
            ce = model.generator_loss(gen, memory)
            loss = ce + self.c.mse_weight * out.mse
            metrics = {"loss": loss.detach(), "ce": ce.detach(), "mse": out.mse.detach()}
            sums = {"loss": (ce.detach() * n_targets, n_targets), "mse": (out.mse.detach(), torch.ones(()))}
            if not training and batch["n_rows"] > 1:
                # Does the generator read the memory? CE with every row given another row's documents,
                # minus CE with its own: ~0 when the memory carries nothing (a collapsed compressor).
                with torch.no_grad():
                    gain = model.generator_loss(gen, memory.roll(1, dims=0)) - ce.detach()
                metrics["memory_gain"] = gain
                sums["memory_gain"] = (gain * n_targets, n_targets)
            return ObjectiveOutput(loss=loss, metrics=metrics, sums=sums)
        return self._stage3(model, batch, gen, n_targets)

    def _stage3(self, model, batch, gen, n_targets) -> ObjectiveOutput:
        B, D = batch["n_rows"], batch["n_docs"]
        with torch.no_grad():  # the compressor is frozen: no gradient can reach it
            memory = model.compress(batch["doc_input_ids"], batch["doc_attention_mask"]).memory
        memory = memory.view(B, D, *memory.shape[1:])
        query = model.query_vectors(batch["query_input_ids"], batch["query_attention_mask"])  # [B, l*d]
        scores = F.cosine_similarity(query.float().unsqueeze(1), memory.flatten(2).float(), dim=-1)  # [B, D]
        Z = differentiable_topk(scores, self.c.top_k, self.c.temperature)
        ce = model.generator_loss(gen, select(Z.to(memory.dtype), memory))
        picked = topk_indices(Z)
        gold = batch["gold"]  # [B, D] bool: the candidates pos_index names
        has_gold = gold.any(1)
        hit1 = gold.gather(1, picked[:, :1]).squeeze(1) & has_gold
        hitk = gold.gather(1, picked).any(1) & has_gold
        n_gold = has_gold.sum().to(torch.float32)
        metrics = {"loss": ce.detach(), "ce": ce.detach(), "recall_at_1": hit1.float().sum() / n_gold.clamp(min=1),
                   f"recall_at_{self.c.top_k}": hitk.float().sum() / n_gold.clamp(min=1),
                   "score_std": scores.detach().std(dim=1).mean()}
        sums = {"loss": (ce.detach() * n_targets, n_targets), "recall_at_1": (hit1.float().sum(), n_gold),
                f"recall_at_{self.c.top_k}": (hitk.float().sum(), n_gold)}
        return ObjectiveOutput(loss=ce, metrics=metrics, sums=sums)

@register_objective("clara_stage1", section=("clara", ClaraSectionConfig))
class ClaraStage1Objective(ClaraObjective):
    stage = 1


@register_objective("clara_stage2", section=("clara", ClaraSectionConfig))
class ClaraStage2Objective(ClaraObjective):
    stage = 2


@register_objective("clara_stage3", section=("clara", ClaraSectionConfig))
class ClaraStage3Objective(ClaraObjective):
    stage = 3


class ClaraCollator:
    """Items of one stage -> tensors: the documents for the compressor (fixed width, left padded),
    the question for the query reasoner (stage 3) and the generator prompt with k x l memory
    placeholders and the target. Widths and l come from the model's own ClaraConfig: a stage
    that continues a model (clara.init_from) keeps the compression rate it was trained with."""

    def __init__(self, tokenizer, stage: int, c, model_cfg):
        self.tokenizer, self.stage, self.c, self.shape = tokenizer, stage, c, model_cfg
        self.tokens = clara_tokens(tokenizer, model_cfg.n_mem)

    def __call__(self, items: list) -> dict[str, Any]:
        tok, c = self.tokenizer, self.c
        if self.stage == 1:
            docs = [x.doc for x in items]
            questions, n_docs = [None] * len(items), 1
            targets = [x.target() for x in items]
            instruction = [INSTRUCTIONS["paraphrase" if x.data_type == "paraphrase" else "qa"] for x in items]
        else:
            docs = [d for x in items for d in x.docs]
            questions, targets = [x.question for x in items], [x.answer for x in items]
            n_docs = len(items[0].docs) if self.stage == 2 else c.top_k
            instruction = [INSTRUCTIONS["answer"]] * len(items)
            if self.stage == 2 and any(len(x.docs) != n_docs for x in items):
                raise DataError(f"stage-2 batch mixes {sorted({len(x.docs) for x in items})} documents per question")
        batch: dict[str, Any] = {}
        gen = encode_generator(tok, self.tokens, instruction=instruction, questions=questions, n_docs=n_docs,
                               targets=targets, max_length=self.shape.generator_max_length)
        batch.update(gen)
        enc = encode_texts(tok, docs, self.shape.doc_max_length, self.tokens)
        batch["doc_input_ids"], batch["doc_attention_mask"] = enc["input_ids"], enc["attention_mask"]
        batch["n_rows"], batch["n_docs"] = len(items), len(docs) // len(items)
        if self.stage == 3:
            q = encode_texts(tok, questions, c.question_max_length, self.tokens)
            batch["query_input_ids"], batch["query_attention_mask"] = q["input_ids"], q["attention_mask"]
            gold = torch.zeros(len(items), batch["n_docs"], dtype=torch.bool)
            for i, x in enumerate(items):
                gold[i, list(x.pos_index)] = True
            batch["gold"] = gold
        return batch
