"""Where built artifacts are cached (`$WMTP_CACHE`, default `~/.cache/weighted_mtp`). Core layer:
data, models and the synthetic world all build into it, so it sits below every one of them."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$WMTP_CACHE`, else `~/.cache/weighted_mtp`."""
    return Path(os.environ.get("WMTP_CACHE") or Path.home() / ".cache" / "weighted_mtp")


def embedded_data_dir(seed: int, n_problems: int) -> Path:
    """The embedded dataset built from `seed` with `n_problems` problems."""
    return cache_root() / "data" / f"embedded-seed{seed}-n{n_problems}"
