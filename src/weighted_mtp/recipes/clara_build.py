"""Training CLaRa's stages in a chain, resumably, and the cached default models that
`wmtp clara eval-pdf` uses when it is given no --model.

A stage whose run directory already holds `final/` is reused; one that holds checkpoints but no
`final/` (SIGTERM, SIGKILL, a crash, a closed laptop) continues from its latest checkpoint and
says so; only a run directory with neither starts from step 0. The default builds add periodic
checkpoints (about four per stage), so even a kill without warning loses at most a quarter of a
stage. A stage stopped by a signal raises `BuildInterrupted` instead of handing the next stage a
model that does not exist.

Two default bases (`BASES`):
- micro: the embedded micro base (knows the embedded world's names only), stages 1-3;
- smollm2: SmolLM2-135M-Instruct (`embedded:smollm2`), a real pretrained LM that reads English,
  stages 1-2 at a CPU budget; its query reasoner starts as a copy of the compressor, as upstream
  initialises it before stage 3.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from weighted_mtp.cache import cache_root
from weighted_mtp.clara.model import ADAPTERS_SUBDIR, CLARA_CONFIG_FILE
from weighted_mtp.clara.resources import resolve_clara_data
from weighted_mtp.config import load_config
from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.files import atomic_write_text, building_dir
from weighted_mtp.objectives import OBJECTIVES
from weighted_mtp.training.checkpoint import latest_checkpoint
from weighted_mtp.training.loop import train


class BuildInterrupted(WMTPError):
    """A stage stopped by a signal: its checkpoint is saved and the same command continues it."""


@dataclass(frozen=True)
class DefaultBase:
    name: str
    stages: tuple[str, ...]  # configs/clara/<name>.yaml, chained by clara.init_from
    prefix: str  # cache directory name prefix
    about: str

    @property
    def answer_stage(self) -> str:
        return self.stages[-1]


BASES = {
    "micro": DefaultBase("micro", ("stage1", "stage2", "stage3"), "clara-default",
                         "the embedded micro base (a 2.6M Llama pretrained on the embedded world's names), stages 1-3"),
    "smollm2": DefaultBase("smollm2", ("stage1_smollm2", "stage2_smollm2"), "clara-smollm2",
                           "SmolLM2-135M-Instruct with LoRA adapters, stages 1-2"),
}


def default_base(name: str) -> DefaultBase:
    if name not in BASES:
        raise ConfigError(f"unknown CLaRa base {name!r} (known: {', '.join(BASES)})")
    return BASES[name]


def _save_every(cfg, saves: int) -> float:
    """The fraction of an epoch between checkpoints that gives about `saves` per stage."""
    stage = OBJECTIVES[cfg.experiment.stage].stage
    path = resolve_clara_data(cfg.dataset.train, stage, "train", cfg, "dataset.train")
    with open(path, "rb") as f:
        lines = sum(1 for line in f if line.strip())
    items = min(lines, cfg.data_sampling.n_samples or lines)
    steps_per_epoch = max(1, math.ceil(items / cfg.training.batch_size))
    every = max(1, math.ceil(cfg.training.max_steps / saves))
    return every / steps_per_epoch


def run_stage(configs: Path, name: str, run_dir: Path, overrides: Sequence[str] = (), *, checkpoints: int = 0,
              say: Callable[[str], None] = print) -> dict:
    """Train configs/clara/<name>.yaml into run_dir (resuming a run that was cut short) and return
    its final metrics. `checkpoints` > 0 adds about that many periodic checkpoints (one kept)."""
    overrides = list(overrides)
    cfg = load_config(configs / "clara" / f"{name}.yaml", overrides)
    if checkpoints and cfg.training.max_steps:
        cfg = load_config(configs / "clara" / f"{name}.yaml", [
            *overrides, f"checkpoint.save_checkpoint_every={_save_every(cfg, checkpoints)}",
            "checkpoint.save_total_limit=1"])
    metrics_file = run_dir / "final_metrics.json"
    if not (run_dir / "final" / CLARA_CONFIG_FILE).is_file():
        found = latest_checkpoint(run_dir) if run_dir.is_dir() else None
        if found is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            say(f"clara {name}: resuming the interrupted run from its checkpoint {found.name} ({run_dir})")
        result = train(cfg, run_dir, resume=found is not None)
        if result.stopped_by is not None:
            raise BuildInterrupted(f"clara {name} stopped by {result.stopped_by} at step {result.steps}; its checkpoint "
                                   f"{result.stop_checkpoint} is saved and the same command continues from it")
        metrics = {**result.last_train, **result.last_val, "tokens_per_s": result.tokens_per_s,
                   "peak_memory_mb": result.peak_memory_mb, "steps": result.steps}
        atomic_write_text(metrics_file, json.dumps(metrics, indent=2) + "\n")
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}


def train_stages(out: Path, configs: Path, overrides: Sequence[str] = (), control: bool = True,
                 stages: Sequence[str] = BASES["micro"].stages, checkpoints: int = 0) -> dict[str, dict]:
    """The stages in order, each continuing the previous one's final model; with `control` (a chain
    ending in stage3) also stage3_frozen_reasoner from the same stage-2 model."""
    overrides = list(overrides)
    results: dict[str, dict] = {}
    previous: Path | None = None
    for name in stages:
        init = [f"clara.init_from={previous}"] if previous is not None else []
        results[_stage_key(name)] = run_stage(configs, name, out / _stage_key(name), [*init, *overrides],
                                              checkpoints=checkpoints)
        last, previous = name, out / _stage_key(name) / "final"
    if control and stages and _stage_key(stages[-1]) == "stage3" and len(stages) > 1:
        stage2 = out / _stage_key(stages[-2]) / "final"
        results["stage3_frozen_reasoner"] = run_stage(
            configs, last, out / "stage3_frozen_reasoner",
            [f"clara.init_from={stage2}", "clara.train_query_reasoner=false", *overrides], checkpoints=checkpoints)
    return results


def _stage_key(name: str) -> str:
    """stage1_smollm2 -> stage1: run directories are named by the stage, whatever the base."""
    return name.split("_", 1)[0]


def default_model_dir(configs: Path, base: str = "micro", world_seed: int = 0) -> Path:
    """Where the default model of `base` is cached: keyed by its stage configs and world seed."""
    spec = default_base(base)
    texts = "".join((configs / "clara" / f"{name}.yaml").read_text() for name in spec.stages)
    seed = f"{world_seed}" if base == "micro" else f"{world_seed}:{base}"  # micro keeps its earlier key
    key = hashlib.sha256(f"{seed}:{texts}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{spec.prefix}-{key}"


def ensure_default_model(configs: Path, world_seed: int = 0, base: str = "micro",
                         say: Callable[[str], None] = print) -> Path:
    """The default CLaRa model of `base`, trained once and cached, with its stage-1 model under
    `stage1/` (the one that still paraphrases: compression quality). An interrupted build resumes."""
    spec = default_base(base)
    out = default_model_dir(configs, base, world_seed)
    if (out / CLARA_CONFIG_FILE).is_file():
        return out
    work = cache_root() / "runs" / out.name
    say(f"building the default CLaRa model ({spec.about}) once into {out}; an interrupted build resumes "
        f"from its last checkpoint (work directory {work})")
    train_stages(work, configs, [f"clara.world_seed={world_seed}", "mlflow.enabled=false"], control=False,
                       stages=spec.stages, checkpoints=4)
    with building_dir(out) as tmp:
        shutil.copytree(work / _stage_key(spec.answer_stage) / "final", tmp, dirs_exist_ok=True)
        shutil.copytree(work / "stage1" / "final", tmp / "stage1")
        if _stage_key(spec.answer_stage) != "stage3":  # no stage 3: the reasoner starts as the compressor
            reasoner = tmp / ADAPTERS_SUBDIR / "query_reasoner"
            shutil.rmtree(reasoner)
            shutil.copytree(tmp / ADAPTERS_SUBDIR / "compressor", reasoner)
    return out
