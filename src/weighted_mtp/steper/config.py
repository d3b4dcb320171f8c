"""The config of StepER data generation (`configs/steper/generate.yaml`): where questions and
passages come from, the retriever, the teacher and the loop's limits. Converted as strictly as
the training config: an unknown key is an error with a suggestion."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from weighted_mtp.config.load import load_dataclass_config
from weighted_mtp.errors import ConfigError


@dataclass
class WorldConfig:
    seed: int = 0
    n_train: int = 3000
    n_valid: int = 300
    n_test: int = 300


@dataclass
class SourceConfig:
    kind: Literal["embedded", "hotpotqa", "2wiki", "musique"] = "embedded"
    world: WorldConfig = field(default_factory=WorldConfig)
    train: Optional[str] = None  # files in the dataset's upstream schema (public datasets)
    valid: Optional[str] = None
    test: Optional[str] = None


@dataclass
class RetrieverConfig:
    kind: Literal["bm25", "dense"] = "bm25"
    k: int = 4


@dataclass
class TeacherConfig:
    kind: Literal["world", "hf", "openai"] = "world"
    error_rate: float = 0.0  # world teacher: chance of stating a wrong same-relation fact
    model_path: Optional[str] = None  # hf: a local HF causal-LM directory
    base_url: Optional[str] = None  # openai: e.g. http://localhost:8000/v1 (vLLM, llama.cpp server)
    model: Optional[str] = None  # openai: the served model's name
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the key, if any
    max_new_tokens: int = 64
    batch_size: int = 8


@dataclass
class GenerateConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    max_steps: int = 5
    splits: list[str] = field(default_factory=lambda: ["train", "valid"])
    chunk_size: int = 64
    output_dir: str = "runs/steper/data"


def load_generate_config(path: str | Path, overrides: list[str] | None = None) -> GenerateConfig:
    cfg = load_dataclass_config(GenerateConfig, path, overrides)
    where = str(path)
    if cfg.retriever.k < 1:
        raise ConfigError(f"{where}: config key 'retriever.k' must be >= 1, got {cfg.retriever.k}")
    if not 1 <= cfg.max_steps <= 20:
        raise ConfigError(f"{where}: config key 'max_steps' must be in [1, 20], got {cfg.max_steps}")
    for split in cfg.splits:
        if split not in ("train", "valid", "test"):
            raise ConfigError(f"{where}: config key 'splits' has {split!r}; known: train, valid, test")
        if cfg.source.kind != "embedded" and getattr(cfg.source, split) is None:
            raise ConfigError(f"{where}: config key 'source.{split}' must name a {cfg.source.kind} file "
                              f"(split {split!r} is in 'splits')")
    t = cfg.teacher
    if t.kind == "world" and cfg.source.kind != "embedded":
        raise ConfigError(f"{where}: config key 'teacher.kind' is 'world', which knows only the embedded world's "
                          f"facts, but source.kind is {cfg.source.kind!r}; use hf or openai")
    if t.kind == "hf" and not t.model_path:
        raise ConfigError(f"{where}: config key 'teacher.model_path' is required for teacher.kind: hf")
    if t.kind == "openai" and not (t.base_url and t.model):
        raise ConfigError(f"{where}: config keys 'teacher.base_url' and 'teacher.model' are required for "
                          "teacher.kind: openai")
    return cfg
