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


# --- the program process -------------------------------------------------------------------------------

def user_tasks(uid):
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/status" % d) as f:
                    st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
                if int(st["Uid"].split()[0]) == uid:
                    n += int(st["Threads"])
            except (OSError, KeyError, ValueError):
                pass
    return n


def setup_program(cfg, req, out_w, err_w, run, keep_fd):
    """In the forked process, before any of the program's code runs."""
    import resource as R
    if cfg["pid_init"]:   # its own session: kill(0) cannot reach unshare, outside the PID namespace. (Elsewhere it
        os.setsid()       # stays in the worker's process group, which the evaluator kills if the worker dies.)
    prctl(PR_SET_NAME, ctypes.c_char_p(PROGRAM_NAME))
    prctl(PR_SET_DUMPABLE, ctypes.c_ulong(1))
    if cfg["program_unshare"]:
        try:
            unshare(cfg["program_unshare"])
        except OSError:   # a kernel or seccomp policy without IPC namespaces: the rest still applies
            if not cfg["program_unshare"] & CLONE_NEWIPC:
                raise
            unshare(cfg["program_unshare"] & ~CLONE_NEWIPC)
        if cfg["program_unshare"] & CLONE_NEWUSER:   # root of its own user namespace: no capability over the worker's
            for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
                with open("/proc/self/" + name, "w") as f:
                    f.write(text)
    work = os.path.join(run, "work")
    fd = os.open(os.path.join(run, "stdin.txt") if req["stdin"] else os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, 1 << 20)
    lim = req["limits"]
    nproc = lim["nproc"] + (user_tasks(os.getuid()) if cfg["nproc_relative"] else 0)
    R.setrlimit(R.RLIMIT_CORE, (0, 0))
    R.setrlimit(R.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
    R.setrlimit(R.RLIMIT_AS, (lim["as"], lim["as"]))
    R.setrlimit(R.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"]))
    R.setrlimit(R.RLIMIT_NPROC, (nproc, nproc))
    uid = cfg["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        prctl(PR_SET_DUMPABLE, ctypes.c_ulong(1))   # as after an exec: it may read its own /proc/self
    prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL))   # (cleared by the uid change: set after it)
    os.umask(0o077)
    os.chdir(work)
    os.environ.clear()
    os.environ.update(req["env"], HOME=work, TMPDIR=work)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def guard():
    """Defence in depth when the program runs as our own user: refuse the calls that would let it
    hurt the evaluator or files outside its directory. Python-level only (ctypes gets around it)."""
    import io, _posixsubprocess
    def refuse(name):
        def refused(*args, **kwargs):
            raise PermissionError(name + " is disabled in the sandbox")
        return refused
    work = os.path.realpath(os.getcwd())
    def inside(path):
        if isinstance(path, int):
            return True
        p = os.path.realpath(os.fsdecode(os.fspath(path)))
        return p == work or p.startswith(work + os.sep) or p == os.devnull
    def checked(name, fn, npaths=1):
        def wrapper(*args, **kwargs):
            if kwargs.get("dir_fd") is not None or kwargs.get("src_dir_fd") is not None \
                    or kwargs.get("dst_dir_fd") is not None:
                raise PermissionError(name + " with dir_fd is disabled in the sandbox")
            for a in args[:npaths]:
                if not inside(a):
                    raise PermissionError("%s outside the working directory is disabled in the sandbox" % name)
            return fn(*args, **kwargs)
        return wrapper
    for name in ("kill", "killpg", "system", "popen", "fork", "forkpty", "execv", "execve", "execl", "execle",
                 "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl",
                 "spawnle", "spawnlp", "spawnlpe", "posix_spawn", "posix_spawnp", "setuid", "setgid", "setreuid",
                 "setregid", "setresuid", "setresgid", "setsid", "setpgid", "setpgrp", "chroot", "fchdir",
                 "fchmod", "fchown", "pidfd_open"):
        if hasattr(os, name):
            setattr(os, name, refuse("os." + name))
    _posixsubprocess.fork_exec = refuse("subprocess")
    for name, n in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("removedirs", 1), ("rename", 2), ("renames", 2),
                    ("replace", 2), ("truncate", 1), ("chmod", 1), ("lchmod", 1), ("chown", 1), ("lchown", 1),
                    ("link", 2), ("symlink", 2), ("mkdir", 1), ("mkfifo", 1), ("mknod", 1), ("utime", 1)):
        if hasattr(os, name):
            setattr(os, name, checked("os." + name, getattr(os, name), n))
    real_open, real_os_open = io.open, os.open
    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError("writing outside the working directory is disabled in the sandbox")
        return real_open(file, mode, *args, **kwargs)
    def guarded_os_open(path, flags, *args, **kwargs):
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        if flags & writes and (kwargs.get("dir_fd") is not None or not inside(path)):
            raise PermissionError("writing outside the working directory is disabled in the sandbox")
        return real_os_open(path, flags, *args, **kwargs)
    builtins.open = io.open = guarded_open
    os.open = guarded_os_open
    import shutil
    shutil.rmtree = refuse("shutil.rmtree")
    shutil.move = refuse("shutil.move")
    shutil.chown = refuse("shutil.chown")


def block_sockets():
    """No network namespace: sockets cannot be created from Python (socket.py subclasses
    _socket.socket, so patching the C type before `import socket` covers socket.socket, ...)."""
    class NoSocket(_socket.socket):
        def __init__(self, *args, **kwargs):
            raise PermissionError("network access is disabled in the sandbox")
    _socket.socket = _socket.SocketType = NoSocket
    sys.modules.pop("socket", None)   # a preloaded socket.py would still hold the real type


def exit_status(e):
    """The exit status the interpreter gives an uncaught SystemExit (printing a non-integer code)."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code if -2**31 <= code < 2**31 else -1
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def finish(status, interrupted=False):
    """End the program process as the interpreter's exit would, minus the heap teardown (see the
    module docstring): join non-daemon threads, run atexit handlers, flush stdout and stderr."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            if stream is sys.stdout and status == 0:
                status = 120   # what the interpreter returns when stdout cannot be flushed at exit
    if interrupted:   # an uncaught KeyboardInterrupt: the interpreter ends by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status % 256)


def run_program(cfg, source):
    """Run the program as module __main__, as `python -I program.py` would; never returns. Uncaught
    errors are printed by sys.excepthook, without our own frame."""
    if cfg["guard"]:
        guard()
    if cfg["block_sockets"]:
        block_sockets()
    sys.argv = [PROGRAM]
    main = types.ModuleType("__main__")
    main.__file__ = PROGRAM
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    try:
        exec(compile(source, PROGRAM, "exec", dont_inherit=True), main.__dict__)
    except SystemExit as e:
        finish(exit_status(e))
    except BaseException as e:
        e = e.with_traceback(e.__traceback__.tb_next if e.__traceback__ is not None else None)
        try:
            sys.excepthook(type(e), e, e.__traceback__)
        except BaseException:
            pass
        finish(1, interrupted=isinstance(e, KeyboardInterrupt))
    finish(0)


if __name__ == "__main__":
    _cfg = eval(sys.argv[1], {"__builtins__": {}})
    try:
        _job = worker(_cfg)
    except BaseException as _e:   # set-up failed: say why on stderr (the evaluator reads it), then go
        try:
            os.write(2, ("sandbox worker: %s: %s\n" % (type(_e).__name__, _e)).encode())
        finally:
            os._exit(1)
    _req, _out_w, _err_w, _w, _run = _job
    try:
        setup_program(_cfg, _req, _out_w, _err_w, _run, _w)
    except BaseException as _e:
        try:
            os.write(_w, ("%s: %s" % (type(_e).__name__, _e))[:2000].encode())
        finally:
            os._exit(127)
    os.close(_w)
    _source = _req["source"]
    del _job, _req, _out_w, _err_w, _w, _run
    run_program(_cfg, _source)
