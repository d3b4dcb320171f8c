"""Atomic writes: a file or directory is built under a temporary name beside its destination and
renamed over it, so a crash never leaves a half-written one where a good one was. Every writer in
the package goes through `atomic_path` / `atomic_open` / `atomic_write_text` (files) or
`building_dir` (directories)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from weighted_mtp.errors import WMTPError


def _plain_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a file name (`torch.save`,
    safetensors, `np.savez`); when the block ends normally it is renamed over `path` with the
    permissions a plain `open` would give, on any failure it is removed and `path` is untouched.
    The temporary name `NAME.tmp-XXXX.tmp` matches both `*.tmp-*` and `*.tmp` leftover checks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{path.name}.tmp-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(_plain_file_mode())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                newline: str | None = "\n") -> Iterator[IO]:
    """`open(path, mode)` whose content appears at `path` only once the block ends normally
    (flushed and fsynced first); text mode defaults to UTF-8 with "\\n" line ends."""
    binary = "b" in mode
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if binary else encoding, newline=None if binary else newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


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


@contextmanager
def building_cache_dir(out: Path, complete: Callable[[Path], bool]) -> Iterator[Path]:
    """Like `building_dir` for a cache entry that any process may build: if another one finished
    `out` first (`complete(out)`), its copy is kept and this build is dropped."""
    tmp = make_build_dir(out)
    try:
        yield tmp
        try:
            tmp.rename(out)
        except OSError:
            if not complete(out):
                raise WMTPError(f"{out}: exists but is not a complete build; remove it and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
