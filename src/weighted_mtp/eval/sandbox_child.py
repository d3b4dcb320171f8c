"""The sandbox worker: the code that runs *inside* the sandbox, never imported by the evaluator.

`sandbox_worker.Worker` starts it once per worker, behind `unshare`, as
`python -I -c <this file's source> <config literal>`; a warm worker then serves one program at a
time. Starting an interpreter and setting up namespaces cost far more than running a typical test
program, so both are paid once per worker. Each program still gets a fresh process, forked from
the worker (a clean copy of an interpreter that has imported nothing of any program), a fresh run
directory, its own IPC namespace where the kernel allows one (and, in a user namespace, a nested
user namespace of its own, so it has no capability over the worker), its own rlimits and the
worker's sandbox uid; before the next program starts, every process it started is killed and
reaped, and its run directory and whatever it left in /tmp, /var/tmp and /dev/shm (private to the
worker where there is a mount namespace) are deleted. The worker itself is not dumpable (no
ptrace, no /proc/<pid>/mem), is pid 1 of its PID namespace where there is one (a namespace init
gets no signal from inside that it has no handler for; the program gets a session of its own,
so kill(0) cannot reach `unshare` either), else the subreaper of every process a program starts,
and runs as root or as the evaluator's user, never as the program's uid.

How a program ends differs from a fresh interpreter in one way: like os._exit after the normal
exit steps (non-daemon threads joined, atexit handlers run, stdout and stderr flushed), the heap is
not torn down, so __del__ methods of objects still alive at exit do not run and files left open
unflushed are not flushed. Tearing a forked heap down writes to every page it touches, which costs
more than running the program (about 35 ms).

Protocol on the control socket (frames: 4-byte big-endian length, then a Python literal):
  worker -> evaluator  {"ready": pid}                            once, when set up
  evaluator -> worker  {"source", "stdin", "env", "limits", "wall_s"} + SCM_RIGHTS [stdout, stderr]
  evaluator -> worker  {"cancel": True}                         while a program runs (Ctrl-C)
  worker -> evaluator  {"rc", "cpu", "timeout", "cancelled", "setup_error"} when the program and
                       every process it started are dead and reaped, and its files are gone
EOF on the control socket (the evaluator closed it or died) ends the worker.

Layers: evaluator -> [unshare] -> worker (pid 1 of the PID namespace where there is one; else a
child subreaper) -> program (forked; new IPC (+ user) namespace; rlimits; uid).

Two files, one program: this one (the system calls, the control channel and the worker) and
sandbox_program.py (what the forked program process does, and the entry point), joined in that
order into the one source `sandbox_worker` runs. Neither is imported as a module.
"""

import atexit
import builtins
import ctypes
import os
import select
import signal
import struct
import sys
import time
import types
import _socket

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NAME, PR_SET_CHILD_SUBREAPER = 1, 4, 15, 36
CLONE_NEWIPC, CLONE_NEWUSER = 0x08000000, 0x10000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC = 2, 4, 4096, 16384
WORKER_NAME, PROGRAM_NAME = b"wmtp-sandbox-w", b"wmtp-sandbox-p"   # /proc/<pid>/comm (tests count them)
PROGRAM = "../program.py"   # relative to the program's working directory, as its tracebacks show it

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def prctl(option, arg):
    _check(_libc.prctl(option, arg, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl %d" % option)


def mount(src, dst, fstype, flags, data):
    enc = lambda s: s.encode() if s is not None else None
    _check(_libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), "mount %s" % dst)


def unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


# --- control channel ---------------------------------------------------------------------------------

class Channel:
    """Length-prefixed literal frames on a unix stream socket; file descriptors ride along."""

    def __init__(self, fd):
        self.sock = _socket.socket(fileno=fd)
        self.buf = b""
        self.fds = []

    def send(self, obj):
        data = repr(obj).encode()
        self.sock.sendall(struct.pack("!I", len(data)) + data)

    def _frame(self):
        if len(self.buf) >= 4:
            n = struct.unpack("!I", self.buf[:4])[0]
            if len(self.buf) >= 4 + n:
                data, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                fds, self.fds = self.fds, []
                return eval(data.decode(), {"__builtins__": {}}), fds
        return None

    def recv(self):
        """The next (message, fds), or None at EOF."""
        while True:
            frame = self._frame()
            if frame is not None:
                return frame
            data, anc, _, _ = self.sock.recvmsg(1 << 16, _socket.CMSG_SPACE(16 * 4))
            for level, kind, payload in anc:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    self.fds += struct.unpack("%di" % (len(payload) // 4), payload[:len(payload) // 4 * 4])
            if not data:
                for fd in self.fds:
                    os.close(fd)
                return None
            self.buf += data


# --- the worker ----------------------------------------------------------------------------------------

def worker_mounts(covers, reveal):
    """Worker-wide: tmpfs over /tmp-like directories and over directories that block the way to the
    Python installation; the needed paths are bound back inside."""
    keep = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in reveal]
    for path, data in covers:
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, data)
    for path, fd in keep:
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount("/proc/self/fd/%d" % fd, path, None, MS_BIND | MS_REC, None)
        os.close(fd)


def prepare(run, req, uid):
    """The run directory: program.py (read-only to the program), stdin.txt, work/ (the program's own)."""
    os.mkdir(run, 0o711)
    os.chmod(run, 0o711)
    with open(os.path.join(run, "program.py"), "w", encoding="utf-8") as f:
        f.write(req["source"])
    os.chmod(os.path.join(run, "program.py"), 0o644)
    if req["stdin"]:
        with open(os.path.join(run, "stdin.txt"), "w", encoding="utf-8") as f:
            f.write(req["stdin"])
    work = os.path.join(run, "work")
    os.mkdir(work, 0o700)
    if uid is not None:
        os.chown(work, uid, uid)


def remove_tree(path):
    """Delete a run directory (no namespace of its own), first giving back permissions the program
    took away; symlinks are removed, never followed."""
    import shutil, stat
    def fix(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
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


def scrub(directory, uid=None, keep=()):
    """Delete what is in `directory` (a private /tmp-like one), or only the entries owned by `uid`
    (a shared one on the host, where the program could write as that uid). Entries in `keep` (on
    the way to a path bound back from the host) and mount points are left alone."""
    try:
        dev = os.lstat(directory).st_dev
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if entry.path in keep or st.st_dev != dev or (uid is not None and st.st_uid != uid):
                continue
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def descendants():
    """Every process below us (every orphan of a program is our child: we are its subreaper)."""
    me = os.getpid()
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d, "rb") as f:
                    stat = f.read()
                parent[int(d)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    below, frontier = set(), {me}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in below}
        below |= frontier
    return below


def kill_as(uid):
    """kill(-1, SIGKILL) sent *as* `uid` reaches exactly its processes (the uid is this worker's
    alone), all at once, so a fork bomb cannot outrun it."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def kill_everything(cfg):
    """Kill and reap every process the program left behind, so the next program starts alone (and
    RLIMIT_NPROC counts only its own processes)."""
    while True:
        if cfg["pid_init"]:   # pid 1 of the namespace: kill(-1) reaches every other process in it
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif cfg["uid"] is not None:
            kill_as(cfg["uid"])
        else:
            for pid in descendants():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        reaped = 0
        while True:   # reap every zombie there is now
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
            reaped += 1
        if not reaped:
            select.select([], [], [], 0.001)


def wait_program(pid, wall_s, chan):
    """Wait for the program's main process, at most wall_s, or until the evaluator cancels.
    Returns (wait status or None, rusage or None, timed_out, cancelled)."""
    deadline = time.monotonic() + wall_s
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    poll = select.poll()
    poll.register(chan.sock.fileno(), select.POLLIN)
    if pidfd is not None:
        poll.register(pidfd, select.POLLIN)
    try:
        while True:
            if chan.buf:   # a cancel that arrived together with the request
                return None, None, False, True
            done, st, ru = os.wait4(pid, os.WNOHANG)
            if done:
                return st, ru, False, False
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None, True, False
            step = left if pidfd is not None else min(left, 0.002)
            for fd, _ in poll.poll(max(1, int(step * 1000))):
                if fd == chan.sock.fileno():
                    return None, None, False, True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def serve(cfg, chan, req, fds, n):
    """Run one request. Returns None in the worker; in the forked program process, the job."""
    out_w, err_w = fds
    run = os.path.join(cfg["base"], "wmtp_run" if cfg["scrub"] else "r%d" % n)
    pipe = ()
    try:
        prepare(run, req, cfg["uid"])
        pipe = r, w = os.pipe()
        pid = os.fork()
    except (OSError, ValueError) as e:   # (ValueError: a source that is not valid Unicode)
        for fd in (out_w, err_w, *pipe):
            os.close(fd)
        remove_tree(run)
        chan.send({"sandbox_error": "cannot start the program: %s: %s" % (type(e).__name__, e)})
        return None
    if pid == 0:
        os.close(r)
        return req, out_w, err_w, w, run
    for fd in (w, out_w, err_w):
        os.close(fd)
    err = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        err += chunk
    os.close(r)
    st, ru, timed_out, cancelled = wait_program(pid, req["wall_s"], chan)
    kill_everything(cfg)
    if st is None:   # killed above and reaped by kill_everything
        rc, cpu = -signal.SIGKILL, None
    else:
        rc, cpu = os.waitstatus_to_exitcode(st), ru.ru_utime + ru.ru_stime
    remove_tree(run)
    for d in cfg["scrub"]:
        scrub(d, keep=cfg["keep"])
    for d in cfg["scrub_owned"]:
        scrub(d, cfg["uid"])
    chan.send({"rc": rc, "cpu": cpu, "timeout": timed_out, "cancelled": cancelled,
               "setup_error": err.decode("utf-8", "replace")[:2000] or None})
    if cancelled:   # the cancel frame (or EOF) is still unread: take it
        if chan.recv() is None:
            os._exit(0)
    return None


def worker(cfg):
    """Set up once, then serve requests until EOF. Returns the job in a forked program process."""
    if cfg["pid_init"] and os.getpid() != 1:   # kill(-1) below must never run outside our own PID namespace
        raise RuntimeError("expected to be pid 1 of a new PID namespace, am pid %d" % os.getpid())
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    chan = Channel(cfg["ctrl_fd"])
    if cfg["covers"]:
        worker_mounts(cfg["covers"], cfg["reveal"])
    if not cfg["pid_init"]:
        prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1))
    prctl(PR_SET_NAME, ctypes.c_char_p(WORKER_NAME))
    for name in cfg["preload"]:   # modules test programs import: loaded once, copied into each program
        try:
            __import__(name)
        except ImportError:
            pass
    prctl(PR_SET_DUMPABLE, ctypes.c_ulong(0))   # no ptrace or /proc/<pid>/mem access to the worker
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    chan.send({"ready": os.getpid()})
    n = 0
    while True:
        msg = chan.recv()
        if msg is None:   # the evaluator is gone: so are we (and, without a mount namespace, our base)
            if not cfg["scrub"]:
                remove_tree(cfg["base"])
            os._exit(0)
        req, fds = msg
        if "source" not in req or len(fds) != 2:   # a late cancel, or garbage
            for fd in fds:
                os.close(fd)
            continue
        n += 1
        job = serve(cfg, chan, req, fds, n)
        if job is not None:
            chan.sock.detach()   # the program process must never close (or use) the worker's socket
            return job
