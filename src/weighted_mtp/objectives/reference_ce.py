"""The Rho-1 reference's next-token CE of a batch's target tokens, shared by the objectives that
weight by excess loss (`rho1`, and the `combined` scheme of the critic arm).

Batches that carry a precomputed `ref_ce` column (`wmtp data ref-ce`) need no reference model;
otherwise the model at `models.reference.path` is loaded on first use, so the loop holds it
only when it is needed, and its tokenizer is checked against the policy's before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from weighted_mtp.config.schema import Config
from weighted_mtp.errors import ConfigError
from weighted_mtp.models.load import DTYPES, load_tokenizer
from weighted_mtp.models.reference import ReferenceModel, check_same_tokenizer


class ReferenceCE:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.model: ReferenceModel | None = None

    def path(self) -> Path | None:
        spec = self.cfg.models.reference.path
        if not spec:
            return None
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"config key 'models.reference.path': {spec} is not a local HF model directory "
                              "(no config.json)")
        return path

    def check_tokenizer(self, tokenizer, policy_path: Path) -> None:
        """Fails before training, not at the first batch."""
        path = self.path()
        if path is not None:
            check_same_tokenizer(tokenizer, load_tokenizer(path), policy_path, path)

    def __call__(self, rows: dict[str, Any]) -> torch.Tensor:
        """[B, S] float32 reference CE of each target token of `rows` (policy rows: input_ids,
        attention_mask, labels, and ref_ce when cached)."""
        if "ref_ce" in rows:
            return rows["ref_ce"].float()
        if self.model is None:
            path = self.path()
            if path is None:
                raise ConfigError("config key 'models.reference.path' is null and the batches carry no ref_ce "
                                  "column; set a reference model or precompute one with `wmtp data ref-ce`")
            self.model = ReferenceModel.load(path, dtype=DTYPES[self.cfg.models.reference.dtype])
        ids = rows["input_ids"]
        self.model.to(ids.device)
        return self.model.token_ce(ids, rows["attention_mask"], rows["labels"],
                                   chunk_size=self.cfg.training.loss.chunk_size).float()
