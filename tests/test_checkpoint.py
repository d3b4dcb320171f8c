"""Checkpoint files: rotation keeps the newest and the best, a failed write leaves nothing
half-written and the previous checkpoint intact."""

import pytest
import torch

from weighted_mtp.training import checkpoint as ckpt


class _FakeModel:
    def __init__(self, value):
        self.value = value

    def save_pretrained(self, directory, tokenizer=None):
        directory.mkdir(parents=True)
        (directory / "weights.txt").write_text(str(self.value))


def _save(run_dir, step):
    return ckpt.save_checkpoint(run_dir, step, _FakeModel(step), None, {"step": step})


def test_rotation_keeps_newest_and_best(tmp_path):
    for step in (1, 2, 3):
        saved = _save(tmp_path, step)
        if step == 2:
            ckpt.mark_best(tmp_path, saved)
    _save(tmp_path, 4)
    removed = ckpt.rotate_checkpoints(tmp_path, keep=2)
    assert [p.name for p in removed] == [ckpt.checkpoint_name(1)]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [ckpt.checkpoint_name(s) for s in (2, 3, 4)]
    assert ckpt.best_checkpoint(tmp_path).name == ckpt.checkpoint_name(2)
    assert ckpt.latest_checkpoint(tmp_path).name == ckpt.checkpoint_name(4)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == ckpt.checkpoint_name(4)


def test_failed_write_leaves_previous_checkpoint_and_no_partial(tmp_path, monkeypatch):
    _save(tmp_path, 5)

    def broken_save(obj, path):
        (path.parent / "half-written").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        _save(tmp_path, 6)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()] == [ckpt.checkpoint_name(5)]
    latest = ckpt.latest_checkpoint(tmp_path)
    assert ckpt.load_trainer_state(latest) == {"step": 5}
    assert (latest / ckpt.MODEL_SUBDIR / "weights.txt").read_text() == "5"


def test_resaving_a_step_replaces_it_whole(tmp_path):
    _save(tmp_path, 7)
    ckpt.save_checkpoint(tmp_path, 7, _FakeModel("new"), None, {"step": 7, "again": True})
    path = ckpt.latest_checkpoint(tmp_path)
    assert ckpt.load_trainer_state(path)["again"] is True
    assert (path / ckpt.MODEL_SUBDIR / "weights.txt").read_text() == "new"
    assert len(list((tmp_path / "checkpoints").glob("*tmp*"))) == 0


def test_unreadable_state_is_a_clear_error(tmp_path):
    path = _save(tmp_path, 1)
    (path / ckpt.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(Exception, match="trainer_state.pt"):
        ckpt.load_trainer_state(path)
