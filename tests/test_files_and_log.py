"""The one atomic-write helper, the one JSONL writer and the rank-0 logger."""

import json
import logging
import os
import stat

import pytest

from weighted_mtp import log as wlog
from weighted_mtp.files import atomic_open, atomic_path, atomic_write_text
from weighted_mtp.jsonl import iter_jsonl, write_jsonl


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half a file")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old\n"
    assert os.listdir(path.parent) == ["out.json"]  # the temporary file is gone
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as a plain open would leave it


def test_atomic_path_for_writers_that_want_a_name(tmp_path):
    path = tmp_path / "x.bin"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.endswith(".tmp") and not path.exists()
        tmp.write_bytes(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["x.bin"]


def test_write_jsonl_round_trips_non_ascii(tmp_path):
    rows = [{"a": 1, "text": "héllo ✓"}, {"b": [1, 2]}]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    assert [obj for _, obj in iter_jsonl(path)] == rows
    assert "héllo ✓" in path.read_text(encoding="utf-8")
    assert path.read_text(encoding="utf-8").count("\n") == 2 and json.loads(path.read_text().splitlines()[1]) == rows[1]


def test_library_messages_print_as_written_on_rank_zero_only(capsys, monkeypatch):
    log = wlog.get_logger("weighted_mtp.some.module")
    log.info("note: plain")
    log.warning("warning: to stderr")
    log.debug("hidden")
    out, err = capsys.readouterr()
    assert (out, err) == ("note: plain\n", "warning: to stderr\n")
    monkeypatch.setenv("RANK", "1")
    log.info("from rank 1")
    assert capsys.readouterr() == ("", "")
    assert logging.getLogger("weighted_mtp").propagate is False  # one copy, whatever the root has
