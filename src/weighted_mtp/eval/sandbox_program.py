"""The program process of the sandbox worker: what a process forked by `worker()` (in
sandbox_child.py) does before and while it runs one program: its session, namespaces, rlimits
and uid (`setup_program`), the optional in-process guard, and running the source as __main__.

Not a module: `sandbox_worker` appends this file's source to sandbox_child.py's and runs the two
as one `python -I -c` program, so the names used here without an import (prctl, unshare,
PROGRAM, PROGRAM_NAME, PR_SET_*, CLONE_*, the standard modules) are sandbox_child.py's. The entry
point, last, runs the worker and then, in each forked child, the program.
"""

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
