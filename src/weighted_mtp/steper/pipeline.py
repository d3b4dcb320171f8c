"""From a generate config to the pieces the StepER commands share: the questions of each split
and their passage corpus (the embedded world, or HotpotQA / 2WikiMultiHopQA / MuSiQue files),
a retriever over that corpus (saved under the output directory and reused), the teacher, and
the generation of every configured split."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weighted_mtp.errors import WMTPError
from weighted_mtp.rag.multihop import corpus_from_examples, corpus_pids, load_multihop
from weighted_mtp.rag.passages import Passage
from weighted_mtp.rag.retrievers import build_retriever, load_retriever
from weighted_mtp.steper.config import GenerateConfig
from weighted_mtp.steper.generate import generate_split
from weighted_mtp.steper.teachers import build_teacher
from weighted_mtp.world.world import build_world


@dataclass
class QASource:
    corpus: list[Passage]
    questions: dict[str, list[Any]]  # split -> questions (qid, question, answers/answer, supporting_pids)
    world: Any = None  # the embedded world, when that is the source


def load_source(cfg: GenerateConfig) -> QASource:
    src = cfg.source
    if src.kind == "embedded":
        w = src.world
        world = build_world(seed=w.seed, n_train=w.n_train, n_valid=w.n_valid, n_test=w.n_test)
        return QASource(corpus=world.corpus, questions=dict(world.questions), world=world)
    from dataclasses import replace

    questions = {split: load_multihop(getattr(src, split), src.kind) for split in ("train", "valid", "test")
                 if getattr(src, split)}
    every = [q for qs in questions.values() for q in qs]
    corpus = corpus_from_examples(every)
    # A paragraph several questions share is indexed once; gold ids must name that one copy.
    canonical = corpus_pids(every)
    questions = {split: [replace(q, supporting_pids=tuple(dict.fromkeys(canonical[p] for p in q.supporting_pids)))
                         for q in qs] for split, qs in questions.items()}
    return QASource(corpus=corpus, questions=questions)


def load_or_build_retriever(source: QASource, kind: str, index_dir: Path):
    """The index under `index_dir`, rebuilt when it indexes a different corpus."""
    manifest = index_dir / "manifest.json"
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("kind") == kind and saved.get("n_passages") == len(source.corpus):
            retriever = load_retriever(index_dir)
            if [p.pid for p in retriever.passages] == [p.pid for p in source.corpus]:
                return retriever
    retriever = build_retriever(source.corpus, kind)
    retriever.save(index_dir)
    return retriever


def make_teacher(cfg: GenerateConfig, source: QASource):
    t = cfg.teacher
    if t.kind == "world":
        return build_teacher("world", world=source.world, error_rate=t.error_rate, seed=cfg.source.world.seed)
    if t.kind == "hf":
        return build_teacher("hf", model_dir=t.model_path, max_new_tokens=t.max_new_tokens, batch_size=t.batch_size)
    return build_teacher("openai", base_url=t.base_url, model=t.model, api_key=os.environ.get(t.api_key_env),
                         max_tokens=t.max_new_tokens)


def split_questions(source: QASource, split: str) -> list[Any]:
    if split not in source.questions or not source.questions[split]:
        raise WMTPError(f"the data source has no questions for split {split!r}")
    return source.questions[split]


def run_generation(cfg: GenerateConfig, show_progress: bool = True) -> dict[str, dict]:
    """Generate every configured split into `output_dir/<split>/`; returns each split's stats."""
    out = Path(cfg.output_dir)
    source = load_source(cfg)
    retriever = load_or_build_retriever(source, cfg.retriever.kind, out / f"index-{cfg.retriever.kind}")
    teacher = make_teacher(cfg, source)
    stats = {}
    for split in cfg.splits:
        generate_split(split_questions(source, split), retriever, teacher, out / split, k=cfg.retriever.k,
                       max_steps=cfg.max_steps, chunk_size=cfg.chunk_size, show_progress=show_progress)
        stats[split] = json.loads((out / split / "stats.json").read_text())
    return stats
