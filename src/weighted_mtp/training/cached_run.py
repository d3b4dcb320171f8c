"""A training run kept in the cache, keyed by its resolved config: run once, reused after, and
rebuilt the same way (the loop is deterministic given `runtime.seed`) wherever the cache is
empty. Benchmarks use it for models they need trained, e.g. SmolLM2's MTP heads.

The run trains in a temporary directory beside its final place and is renamed there only when
it finished, so an interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from weighted_mtp.cache import cache_root
from weighted_mtp.config.load import config_to_dict
from weighted_mtp.config.registry import SECTIONS, STAGE_SECTION
from weighted_mtp.config.schema import Config
from weighted_mtp.files import make_build_dir
from weighted_mtp.training.loop import train

RUNS_DIR = "runs"


def run_key(cfg: Config) -> str:
    """The resolved config's hash, without the sections of other methods (`clara:` does not
    change an `mtp_heads` run, and a field added there must not orphan its cached runs)."""
    own = STAGE_SECTION.get(cfg.experiment.stage)
    relevant = {k: v for k, v in config_to_dict(cfg).items() if k not in SECTIONS or k == own}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_run(cfg: Config, *, show_progress: bool = False) -> Path:
    """The run directory of `cfg` under `$WMTP_CACHE/runs/<name>-<key>/` (its `final/` is the
    trained model), training it first if it is not there."""
    out = cache_root() / RUNS_DIR / f"{cfg.experiment.name}-{run_key(cfg)}"
    if (out / "final" / "config.json").is_file():
        return out
    tmp = make_build_dir(out)
    try:
        train(cfg, tmp / "run", show_progress=show_progress)
        try:
            (tmp / "run").rename(out)
        except OSError:  # another process finished first
            if not (out / "final" / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
