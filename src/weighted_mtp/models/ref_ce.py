"""`wmtp data ref-ce`: copy a dataset with each row's reference CE cached in a `ref_ce` field.

Why: a Rho-1 run otherwise holds two models (policy and reference) and pays a reference forward
pass every step. The reference never changes, so its per-token CE can be computed once; the run
then loads only the policy and reads CE_reference from the batch (`SFTCollator` -> ref_ce).

The values are tied to the tokenizer and to `dataset.max_length` (truncation decides which
targets exist): one value per response target token (response + EOS), in order, exactly as
`tokenize_batch` produces them. The collator uses a prefix when the column is longer than the
row's targets and refuses a shorter one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from weighted_mtp.data.collate import _pad, pad_token_id, response_positions, tokenize_batch
from weighted_mtp.data.records import Record, parse_record
from weighted_mtp.errors import ConfigError, DataError, WMTPError
from weighted_mtp.files import atomic_open
from weighted_mtp.models.reference import ReferenceModel

DECIMALS = 5
# Rows are tokenized a window at a time and batched by length inside the window (less padding),
# then written back in their original order: row i of the copy is row i of the input.
WINDOW_BATCHES = 8


def _read_rows(path: Path):
    """(line_no, original JSON object, Record) for every non-blank line, validated."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError.at(path, line_no, f"invalid JSON/UTF-8: {exc}") from None
            yield line_no, obj, parse_record(obj, path, line_no)


def _score_window(rows: list[tuple[int, dict, Record]], reference: ReferenceModel, tokenizer: Any,
                  max_length: int, batch_size: int, pad_id: int, path: Path, stats: dict) -> list[list[float]]:
    """Reference CE of each row's response targets, in row order."""
    examples = tokenize_batch(tokenizer, [r for _, _, r in rows], max_length)
    order = sorted(range(len(rows)), key=lambda i: len(examples[i].input_ids))
    values: list[list[float]] = [[] for _ in rows]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        exs = [examples[i] for i in idx]
        batch = _pad(exs, max(len(e.input_ids) for e in exs), pad_id)
        ce = reference.token_ce(batch["input_ids"], batch["attention_mask"], batch["labels"]).cpu()
        for row, (i, ex) in enumerate(zip(idx, exs)):
            row_ce = ce[row, response_positions(ex)].tolist()
            if not all(math.isfinite(v) for v in row_ce):
                raise WMTPError(f"{path}:{rows[i][0]}: the reference gave a non-finite CE "
                                "(try models.reference.dtype=float32)")
            values[i] = [round(v, DECIMALS) for v in row_ce]
            stats["truncated"] += int(ex.truncated)
            stats["tokens"] += len(row_ce)
            stats["_ce_sum"] += sum(row_ce)
    return values


def write_reference_ce(input_path: str | Path, output_path: str | Path, reference: ReferenceModel, tokenizer: Any,
                       max_length: int, batch_size: int = 16, correct_only: bool = False, device: str = "cpu",
                       progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Write `output_path`: `input_path` with `ref_ce` appended to every row (existing fields kept
    as they are, an old `ref_ce` replaced).

    With `correct_only`, incorrect rows are copied without `ref_ce` (an old one is removed), so
    the copy keeps every row but only correct rows can be collated for Rho-1 (sample with
    `data_sampling.correct_only`). Written to a temp file and renamed, so a failure leaves no
    half file for the index to pick up. `progress` is called with the running stats after each
    window. Returns rows / scored / skipped / truncated / tokens / mean_ce.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise DataError(f"{input_path}: data file not found")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise ConfigError(f"{output_path}: the output would overwrite the input; write the copy to another file")
    if output_path.name.endswith(".gz"):
        raise ConfigError(f"{output_path}: processed data must be plain .jsonl (rows are read by seeking)")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    reference.to(device)
    pad_id = pad_token_id(tokenizer)
    stats: dict[str, Any] = {"rows": 0, "scored": 0, "skipped": 0, "truncated": 0, "tokens": 0, "_ce_sum": 0.0}
    with atomic_open(output_path) as out:
        def flush(window: list[tuple[int, dict, Record]]) -> None:
            scored = [row for row in window if row[2].is_correct or not correct_only]
            values = iter(_score_window(scored, reference, tokenizer, max_length, batch_size, pad_id,
                                        input_path, stats) if scored else [])
            for _, obj, record in window:
                obj.pop("ref_ce", None)
                if record.is_correct or not correct_only:
                    obj["ref_ce"] = next(values)
                    stats["scored"] += 1
                else:
                    stats["skipped"] += 1
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
                stats["rows"] += 1
            if progress is not None:
                progress(_public(stats))

        window: list[tuple[int, dict, Record]] = []
        for row in _read_rows(input_path):
            window.append(row)
            if len(window) == batch_size * WINDOW_BATCHES:
                flush(window)
                window = []
        if window:
            flush(window)
    return _public(stats)


def _public(stats: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in stats.items() if not k.startswith("_")}
    out["mean_ce"] = round(stats["_ce_sum"] / stats["tokens"], DECIMALS) if stats["tokens"] else float("nan")
    return out
