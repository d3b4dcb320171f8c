"""Where CLaRa's inputs come from: `clara.base_model` (the embedded micro base, `embedded:smollm2`
or a local HF directory)
and `dataset.train` / `dataset.validation` (ml-clara JSONL files, or `embedded:clara` for the
stage's files built from the embedded world)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from weighted_mtp.cache import cache_root
from weighted_mtp.clara.base import ensure_clara_base
from weighted_mtp.clara.embedded import write_clara_data
from weighted_mtp.errors import ConfigError
from weighted_mtp.models.load import resolve_model_path
from weighted_mtp.world.world import build_world

EMBEDDED_DATA = "embedded:clara"
EMBEDDED_BASE = "embedded:clara-base"


def resolve_base_model(spec: str, cfg) -> Path:
    if spec == EMBEDDED_BASE:
        return ensure_clara_base(world_seed=cfg.clara.world_seed)
    if spec.startswith("embedded:"):  # a pretrained model shipped in a package (embedded:smollm2)
        return Path(resolve_model_path(spec))
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"config key 'clara.base_model': {spec} is not a local HF model directory (no config.json), "
                          f"{EMBEDDED_BASE} nor embedded:smollm2")
    return path


def embedded_clara_dir(world_seed: int = 0, train_docs: int = 96, k: int = 1, text_docs: int = 0) -> Path:
    """The embedded world's CLaRa data in ml-clara's formats, built once into the cache.
    `train_docs` is small by default: the micro base learns to carry the names of about a hundred
    documents through its memory vectors in a CPU budget, not six hundred (README, CLaRa).
    Stage 2 gives each question `k` documents, stage 3's top-k (the gold one and k - 1
    distractors): the generator is instruction-tuned on as many documents as stage 3 hands it.
    `text_docs` chunks of ordinary prose join stages 1-2 (`clara.text_corpus`)."""
    spec = {"v": 1, "world_seed": world_seed, "train_docs": train_docs, "k": k}
    if text_docs:  # absent when 0, so the world-only data keeps its cache key
        spec.update(text_docs=text_docs, text_v=2)
    key = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:12]
    out = cache_root() / "data" / f"clara-embedded-{key}"
    if (out / "stage3_test.jsonl").is_file():
        return out
    return write_clara_data(out, build_world(seed=world_seed), k=k, seed=world_seed, train_docs=train_docs,
                            text_docs=text_docs)


def resolve_clara_data(spec: str, stage: int, which: str, cfg, key: str) -> Path:
    if spec == EMBEDDED_DATA:
        split = "train" if which == "train" else "valid"
        data = embedded_clara_dir(cfg.clara.world_seed, cfg.clara.train_docs, cfg.clara.top_k, cfg.clara.text_docs)
        return data / f"stage{stage}_{split}.jsonl"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"config key '{key}': data file not found: {spec}")
    return path
