"""Where a config's data comes from: `dataset.train` / `dataset.validation` as a file path or an
embedded split. Data layer, so every method (training, Rho-1 precompute, mtp_heads) resolves
paths the same way without importing the training loop."""

from __future__ import annotations

from pathlib import Path

from weighted_mtp.cache import embedded_data_dir
from weighted_mtp.config.schema import Config
from weighted_mtp.data.embedded.build import build_embedded_dataset
from weighted_mtp.errors import ConfigError

EMBEDDED_SPLITS = {"train", "valid", "test"}


def resolve_data_path(spec: str, cfg: Config, key: str) -> Path:
    """The JSONL file `spec` names: a path, or `embedded:<split>` (built into the cache on first use).
    `key` is the config key that holds `spec`, for the error message."""
    if spec.startswith("embedded:"):
        split = spec.split(":", 1)[1]
        if split not in EMBEDDED_SPLITS:
            raise ConfigError(f"config key '{key}': unknown embedded split '{split}' (known: {sorted(EMBEDDED_SPLITS)})")
        emb = cfg.dataset.embedded
        return build_embedded_dataset(embedded_data_dir(emb.seed, emb.n_problems), seed=emb.seed,
                                      n_problems=emb.n_problems)[split]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"config key '{key}': data file not found: {spec}")
    return path
