"""Checkpoints that are never half-written: each is built in a temporary directory and renamed
into place (a rename is atomic), and pointer files are replaced atomically. A run killed at any
moment leaves its previous checkpoints intact and loadable.

A checkpoint is `checkpoints/step_XXXXXXXX/` holding `model/` (the HF-loadable export) and
`trainer_state.pt` (step, optimizer, scheduler, data position, objective state, RNG). A run of
several processes writes the optimizer and model as torch.distributed.checkpoint shards in
`dcp/` instead (`trainer_state.pt` then says `"format": "dcp"` and holds no optimizer) plus each
process's RNG and objective state in `rank_states/`; it resumes on any number of processes."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from weighted_mtp.constants import MODEL_SUBDIR
from weighted_mtp.errors import TrainingError
from weighted_mtp.files import atomic_write_text

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.pt"
DCP_SUBDIR = "dcp"
RANK_STATES_SUBDIR = "rank_states"
# Fault-injection hook for tests: "STEP:SECONDS" (or "SECONDS" for every save) sleeps in the
# middle of writing that checkpoint (model written, trainer state not yet, no rename), so a test
# can kill the process mid-write deterministically.
SLOW_WRITE_ENV = "WMTP_TEST_SLOW_CHECKPOINT"


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
        _slow_write_hook(step)
        torch.save(trainer_state, tmp / STATE_FILE)
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(root / "latest", final.name + "\n")
    return final


def _publish(tmp: Path, final: Path) -> None:
    """The atomic step: a complete temporary directory becomes the checkpoint."""
    if final.exists():  # the same step saved again (e.g. periodic and end of training)
        stale = final.parent / (final.name + ".tmp-stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.rename(final, stale)
        os.rename(tmp, final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.rename(tmp, final)


def _slow_write_hook(step: int) -> None:
    spec = os.environ.get(SLOW_WRITE_ENV)
    if not spec:
        return
    at, _, seconds = spec.rpartition(":")
    if not at or int(at) == step:
        time.sleep(float(seconds))


def save_checkpoint_sharded(run_dir: Path, step: int, ctx, *, write_model: Callable[[Path], None],
                            write_shards: Callable[[Path], None], trainer_state: dict, rank_state: dict) -> Path:
    """The same atomic discipline with several processes (`ctx`: rank, barrier, broadcast).
    Rank 0 makes the temporary directory; every process writes its part (`write_model` and
    `write_shards` are collectives: the full-model export, written by rank 0, and the DCP
    shards); only after a barrier, when every part is complete, does rank 0 rename it into
    place and move the `latest` pointer. Rank 0's `trainer_state` is the run's."""
    root = run_dir / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp_name = None
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        tmp_name = tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=root)
    tmp = Path(ctx.broadcast_object(tmp_name))
    try:
        write_model(tmp / MODEL_SUBDIR)
        write_shards(tmp / DCP_SUBDIR)
        (tmp / RANK_STATES_SUBDIR).mkdir(parents=True, exist_ok=True)
        torch.save(rank_state, tmp / RANK_STATES_SUBDIR / f"rank_{ctx.rank}.pt")
        _slow_write_hook(step)
        if ctx.is_main:
            torch.save({**trainer_state, "format": "dcp", "world_size": ctx.world_size}, tmp / STATE_FILE)
        ctx.barrier()
        if ctx.is_main:
            _publish(tmp, final)
            atomic_write_text(root / "latest", final.name + "\n")
    finally:
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
    ctx.barrier()  # nobody reads or rotates checkpoints before the new one is in place
    return final


def is_sharded(trainer_state: dict) -> bool:
    return trainer_state.get("format") == "dcp"


def load_rank_state(checkpoint: Path, rank: int) -> dict:
    """This process's RNG and objective state; a process the writing run did not have (resuming
    on more processes) takes rank 0's."""
    folder = checkpoint / RANK_STATES_SUBDIR
    path = folder / f"rank_{rank}.pt"
    if not path.is_file():
        path = folder / "rank_0.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any failure here means the checkpoint is unusable
        raise TrainingError(f"{path}: cannot load the process state: {e}") from None


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
