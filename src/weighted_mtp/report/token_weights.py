"""The token weights a trained weighted arm applies, recomputed on validation rows, for the
report's heat maps and histograms.

Why recompute rather than log during training: weights per token of every batch would be a huge
log, and a reader wants them on a few readable solutions. The run's own objective is rebuilt from
its saved config and called exactly as validation calls it (training=False: no whitening
statistics or random-stream updates), so the weights are the ones the method would apply to these
rows now. Objective state that training evolved (whitening statistics, a critic value head that
kept learning) is restored from the run's latest checkpoint when one exists.

Caveat: some schemes are relative to the batch (Rho-1 keeps the top k% of a batch's tokens, the
matched controls shuffle within a batch), so the weights are those of this batch of rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from weighted_mtp.config import load_config
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.data.collate import SFTCollator
from weighted_mtp.errors import WMTPError
from weighted_mtp.models.load import load_tokenizer
from weighted_mtp.objectives import OBJECTIVES
from weighted_mtp.training import checkpoint as ckpt
from weighted_mtp.training.data_feed import load_split


@dataclass
class WeightedExample:
    tokens: list[str]  # each token decoded on its own (readable text, not byte-level symbols)
    weights: list[float]  # the weight of token j as a target (0 where it is not one)
    is_target: list[bool]  # False for the prompt (and special prefix): no loss was taken there


class TokenWeightSample(NamedTuple):
    examples: list[WeightedExample]
    target_weights: np.ndarray  # float64, every target token's weight over the batch (histogram)


def decode_tokens(tokenizer, ids: list[int]) -> list[str]:
    """One readable string per token: byte-level BPE symbols (Ġ for a space, Ċ for a newline)
    become the text they stand for. A token holding part of a multi-byte character decodes to a
    replacement character; that is the honest rendering of a lone token."""
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return [tokenizer.convert_tokens_to_string([p]) for p in pieces]


def _example(tokenizer, ids: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> WeightedExample:
    target = labels != IGNORE_INDEX
    target[0] = False  # position 0 has no context, never a target
    positions = target.nonzero()
    length = int(positions[-1]) + 1 if len(positions) else int(ids.numel())  # drop trailing padding
    return WeightedExample(
        tokens=decode_tokens(tokenizer, ids[:length].tolist()),
        weights=[float(w) for w in weights[:length]],
        is_target=[bool(t) for t in target[:length]],
    )


def _restore_objective_state(objective, run_dir: Path) -> None:
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is not None:
        objective.load_state_dict(ckpt.load_trainer_state(latest)["objective"])


def example_token_weights(run_dir: str | Path, n_examples: int = 4, max_length: int | None = None,
                          n_rows: int | None = None) -> TokenWeightSample | None:
    """The first `n_examples` validation rows' tokens and weights, and every target weight of
    the batch they are part of (`n_rows` rows, default max(n_examples, training.batch_size)).
    `max_length` overrides dataset.max_length (shorter rows make smaller heat maps). None for
    objectives that apply no token weights (`applies_token_weights` false: baseline, critic, ...).
    Runs on the CPU."""
    from transformers.utils import logging as hf_logging

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if not OBJECTIVES[cfg.experiment.stage].applies_token_weights:
        return None
    final = run_dir / "final"
    if not (final / "config.json").is_file():
        raise WMTPError(f"{final}: no exported model (the run did not finish, or checkpoint.save_final is false)")
    hf_logging.disable_progress_bar()  # a report prints its paths, not loading bars
    objective = OBJECTIVES[cfg.experiment.stage](cfg)
    model = objective.load_model(final)
    _restore_objective_state(objective, run_dir)
    model.to("cpu")
    model.eval()
    objective.to("cpu")
    tokenizer = load_tokenizer(final)
    n = max(n_examples, n_rows or cfg.training.eval_batch_size or cfg.training.batch_size)
    split = load_split(cfg, "validation", False, n=n)
    batch = SFTCollator(tokenizer, max_length or cfg.dataset.max_length)(split.items[:n])
    batch.pop("n_truncated")
    with torch.no_grad():
        out = objective(model, batch, training=False)
    tw = out.token_weights
    if tw is None:
        return None
    ids, labels, weights = tw.input_ids.cpu(), tw.labels.cpu(), tw.weights.detach().float().cpu()
    examples = [_example(tokenizer, ids[i], labels[i], weights[i]) for i in range(min(n_examples, ids.shape[0]))]
    mask = labels != IGNORE_INDEX
    mask[:, 0] = False
    return TokenWeightSample(examples=examples, target_weights=weights[mask].double().numpy())
