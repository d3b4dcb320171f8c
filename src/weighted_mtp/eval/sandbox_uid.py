"""Dedicated uids for sandboxed runs as root: one uid per run, held while it runs, so concurrent
programs never share a uid (nor its RLIMIT_NPROC count), and all of a run's processes can be
killed by uid afterwards."""

from __future__ import annotations

import grp
import pwd
import shutil
import socket
import subprocess

from weighted_mtp.errors import WMTPError

UID_RANGE = range(64000, 64512)


class SandboxError(WMTPError):
    """The sandbox itself cannot run programs on this machine (not the program's fault)."""


class UidSlot:
    """A dedicated uid for one run, held through an abstract unix socket (released on close or exit),
    so two concurrent runs, in this process or another, never share a uid (nor RLIMIT_NPROC)."""

    _free: list[int] | None = None

    def __init__(self, uid: int, sock: socket.socket):
        self.uid, self._sock = uid, sock

    @classmethod
    def _candidates(cls) -> list[int]:
        if cls._free is None:
            free = []
            for uid in UID_RANGE:
                try:
                    pwd.getpwuid(uid)
                    continue
                except KeyError:
                    pass
                try:
                    grp.getgrgid(uid)
                    continue
                except KeyError:
                    free.append(uid)
            cls._free = free
        return cls._free

    @classmethod
    def acquire(cls) -> "UidSlot":
        for uid in cls._candidates():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(f"\0wmtp-sandbox-uid-{uid}")
            except OSError:
                sock.close()
                continue
            return cls(uid, sock)
        raise SandboxError(f"no free sandbox uid in {UID_RANGE.start}-{UID_RANGE.stop - 1}")

    def release(self) -> None:
        self._sock.close()


def kill_uid(uid: int) -> None:
    """Kill every process running as `uid` (ours alone, see UidSlot): kill(-1) sent *as* that uid
    reaches exactly its processes, including ones that left our session."""
    kill = shutil.which("kill") or "/bin/kill"
    try:
        subprocess.run([kill, "-9", "-1"], user=uid, group=uid,
                       extra_groups=[], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pass
