"""Train one stage of one seed, resumably.

A stage's run directory is `<study>/seed<S>/<stage>/`. Before training, `study_stage.json`
records the resolved config; after a run that finished (final/ exported, no stop signal),
`study_complete.json` marks it done. On the next `wmtp study`:
- marked done and final/ present: skipped (nothing is trained);
- checkpoints present: resumed with the loop's `--resume` (model, optimizer, data position and
  RNG restored, so it ends as an uninterrupted run would);
- neither: a leftover without any checkpoint is moved aside (never deleted) and the stage starts.
A stage whose resolved config differs from the one recorded stops the study with the first key
that differs, since resuming or skipping it would mix two experiments under one name."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weighted_mtp.config import Config, config_to_dict
from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.log import get_logger
from weighted_mtp.training import checkpoint as ckpt
from weighted_mtp.training.loop import train

log = get_logger(__name__)

STAGE_FILE = "study_stage.json"
COMPLETE_FILE = "study_complete.json"
# Keys that change how a run is watched or where it runs, not what it learns: a rerun may change them.
UNCHECKED_KEYS = ("mlflow.", "runtime.num_threads", "runtime.device", "training.log_interval",
                  "training.eval_batch_size", "checkpoint.save_total_limit", "distributed.timeout_s")


class StudyInterrupted(WMTPError):
    """A stop signal ended a stage early; its checkpoint is saved and the study can continue."""


@dataclass(frozen=True)
class StageOutcome:
    run_dir: Path
    final_dir: Path
    trained: bool          # False: skipped, done by an earlier call
    seconds: float         # wall time spent training this stage, over all calls that trained it
    cpu_seconds: float     # CPU time of this process (all its threads) over the same calls
    steps: int


def write_json(path: Path, obj: Any) -> None:
    ckpt.atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WMTPError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); move it aside to redo this stage") \
            from None


def first_difference(a: Any, b: Any, prefix: str = "", ignore: tuple[str, ...] = ()) -> tuple[str, Any, Any] | None:
    """(dotted key, value in a, value in b) of the first difference between two config dicts,
    skipping keys that start with any of `ignore`."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            dotted = f"{prefix}{key}"
            if dotted.startswith(ignore):
                continue
            found = first_difference(a.get(key), b.get(key), dotted + ".", ignore)
            if found:
                return found
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


def is_complete(run_dir: Path) -> bool:
    return (run_dir / COMPLETE_FILE).is_file() and (run_dir / "final" / "config.json").is_file()


def _check_same_config(run_dir: Path, config: dict) -> None:
    path = run_dir / STAGE_FILE
    if not path.is_file():
        return
    diff = first_difference(read_json(path).get("config", {}), config, ignore=UNCHECKED_KEYS)
    if diff:
        key, old, new = diff
        raise ConfigError(f"{run_dir} was trained with {key}={old!r}, this study asks for {key}={new!r}; "
                          "rerun with the original configs and overrides, or choose another --output-dir")


def _move_aside(run_dir: Path) -> None:
    moved = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(moved)
    log.info(f"{run_dir} had no checkpoint to resume from; moved it to {moved}")


def run_stage(cfg: Config, run_dir: Path, *, show_progress: bool = True) -> StageOutcome:
    """Train (or resume, or skip) one stage; raises StudyInterrupted after a clean stop."""
    config = json.loads(json.dumps(config_to_dict(cfg), default=str))
    _check_same_config(run_dir, config)
    if is_complete(run_dir):
        done = read_json(run_dir / COMPLETE_FILE)
        return StageOutcome(run_dir, run_dir / "final", False, float(done.get("seconds", 0.0)),
                            float(done.get("cpu_seconds", 0.0)), int(done["steps"]))
    resume = bool(ckpt.list_checkpoints(run_dir))
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        _move_aside(run_dir)
    stage_file = run_dir / STAGE_FILE
    earlier = read_json(stage_file) if stage_file.is_file() else {}
    spent, cpu = float(earlier.get("seconds", 0.0)), float(earlier.get("cpu_seconds", 0.0))
    write_json(stage_file, {"config": config, "seconds": spent, "cpu_seconds": cpu})
    start, start_cpu = time.perf_counter(), time.process_time()
    result = train(cfg, run_dir, resume=resume, show_progress=show_progress)
    spent += time.perf_counter() - start
    cpu += time.process_time() - start_cpu
    write_json(stage_file, {"config": config, "seconds": spent, "cpu_seconds": cpu})
    if result.stopped_by is not None or result.final_dir is None:
        raise StudyInterrupted(f"{run_dir}: stopped by {result.stopped_by or 'the run'} after step {result.steps}; "
                               "run the same `wmtp study` command again to continue")
    write_json(run_dir / COMPLETE_FILE, {"steps": result.steps, "seconds": round(spent, 1),
                                         "cpu_seconds": round(cpu, 1),
                                         "tokens_per_s": round(result.tokens_per_s, 1),
                                         "resumed": resume, "final_dir": str(result.final_dir),
                                         "last_val": result.last_val})
    return StageOutcome(run_dir, result.final_dir, True, spent, cpu, result.steps)
