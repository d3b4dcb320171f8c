"""Filesystem moves that never leave a half-written directory where a good one was."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished directory `tmp` at `out` by renames only. An existing `out` (unless
    empty) is moved aside first and restored if the final rename fails, then deleted."""
    if not out.exists():
        tmp.rename(out)
        return
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def make_build_dir(out: Path) -> Path:
    """A fresh temporary directory beside `out` (same filesystem, so a rename can replace it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the result should look like a plain mkdir
    return tmp


@contextmanager
def building_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary directory beside `out` to build into; on success it replaces `out`
    (see `replace_dir`), on any failure it is removed and `out` is untouched."""
    tmp = make_build_dir(out)
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
