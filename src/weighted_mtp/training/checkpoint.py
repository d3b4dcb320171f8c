"""Checkpoints that are never half-written: each is built in a temporary directory and renamed
into place (a rename is atomic), and pointer files are replaced atomically. A run killed at any
moment leaves its previous checkpoints intact and loadable."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from weighted_mtp.errors import TrainingError

CHECKPOINT_DIR = "checkpoints"
MODEL_SUBDIR = "model"
STATE_FILE = "trainer_state.pt"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_model(model, tokenizer, directory: Path) -> None:
    """Any model of an objective (MTP policy, critic) saves itself; the tokenizer goes beside it
    so every checkpoint and export is self-contained."""
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and ".tmp" not in p.name
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, trainer_state: dict) -> Path:
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=root))
    try:
        save_model(model, tokenizer, tmp / MODEL_SUBDIR)
        torch.save(trainer_state, tmp / STATE_FILE)
        if final.exists():  # the same step saved again (e.g. periodic and end of training)
            stale = root / (final.name + ".tmp-stale")
            shutil.rmtree(stale, ignore_errors=True)
            os.rename(final, stale)
            os.rename(tmp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(root / "latest", final.name + "\n")
    return final


def mark_best(run_dir: Path, checkpoint: Path) -> None:
    atomic_write_text(run_dir / CHECKPOINT_DIR / "best", checkpoint.name + "\n")


def best_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / CHECKPOINT_DIR / "best"
    if not pointer.is_file():
        return None
    path = run_dir / CHECKPOINT_DIR / pointer.read_text().strip()
    return path if path.is_dir() else None


def rotate_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Keeps the newest `keep` checkpoints plus the best one; returns what was removed."""
    found = list_checkpoints(run_dir)
    protected = {best_checkpoint(run_dir)}
    removed = []
    for path in found[:-keep] if keep > 0 else found:
        if path not in protected:
            shutil.rmtree(path)
            removed.append(path)
    for leftover in (run_dir / CHECKPOINT_DIR).glob("*.tmp-*"):  # from a run killed mid-write
        shutil.rmtree(leftover, ignore_errors=True)
    return removed


def load_trainer_state(checkpoint: Path) -> dict:
    path = checkpoint / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any failure here means the checkpoint is unusable
        raise TrainingError(f"{path}: cannot load trainer state: {e}") from None
