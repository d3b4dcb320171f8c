"""Source code that runs *inside* the sandbox, kept apart from the evaluator that launches it:
the supervisor (mounts, limits, uid drop, status report), the boot code of the program process,
and the optional guard and socket block. Each is a string handed to a fresh interpreter."""

# The supervisor: argv[1] is its config as a Python literal (we write it; `json` would cost 8 ms of
# imports per run). Applies mounts, limits and the uid drop, runs the program, waits for it and writes
# {"rc", "cpu"} (or an error) to the status pipe, as a literal too. Never prints.
SUPERVISOR = r'''
import os, sys
cfg = eval(sys.argv[1], {"__builtins__": {}})
sfd = cfg["status_fd"]
def report(obj):
    try:
        os.write(sfd, repr(obj).encode())
    except OSError:
        pass
def mounts(covers, reveal):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def mount(src, dst, fstype, flags, data):
        enc = lambda s: s.encode() if s is not None else None
        if libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "mount %s: %s" % (dst, os.strerror(e)))
    keep = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in reveal]
    for path, data in covers:
        mount("tmpfs", path, "tmpfs", 2 | 4, data)              # MS_NOSUID | MS_NODEV
    for path, fd in keep:
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount("/proc/self/fd/%d" % fd, path, None, 4096 | 16384, None)   # MS_BIND | MS_REC
        os.close(fd)
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
try:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if cfg["covers"]:
        mounts(cfg["covers"], cfg["reveal"])
    os.chdir(cfg["work"])
    lim = cfg["limits"]
    nproc = lim["nproc"] + (user_tasks(os.getuid()) if cfg["nproc_relative"] else 0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            import resource as R
            os.close(r)
            os.close(sfd)
            R.setrlimit(R.RLIMIT_CORE, (0, 0))
            R.setrlimit(R.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
            R.setrlimit(R.RLIMIT_AS, (lim["as"], lim["as"]))
            R.setrlimit(R.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"]))
            R.setrlimit(R.RLIMIT_NPROC, (nproc, nproc))
            if cfg["uid"] is not None:
                os.setgroups([])
                os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
                os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
            os.umask(0o077)
            py = cfg["python"]
            os.execve(py, [py, "-I", "-c", cfg["boot"], cfg["program"]], cfg["env"])
        except BaseException as e:
            try:
                os.write(w, ("%s: %s" % (type(e).__name__, e))[:2000].encode())
            finally:
                os._exit(127)
    os.close(w)
    err = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        err += chunk
    _, st, ru = os.wait4(pid, 0)
    report({"rc": os.waitstatus_to_exitcode(st), "cpu": ru.ru_utime + ru.ru_stime,
            "setup_error": err.decode("utf-8", "replace")[:2000] or None})
except BaseException as e:
    report({"sandbox_error": ("%s: %s" % (type(e).__name__, e))[:2000]})
os._exit(0)   # skip interpreter finalisation: a few ms per run
'''

# The program process: `python -I -c BOOT ../program.py`. The source is read through the relative path
# and run as module __main__ (not runpy.run_path, which opens the absolute path: the sandbox uid may not
# traverse the ancestors of its run directory, only the run directory itself).
BOOT_MARK = "# wmtp-sandbox program"   # in every sandboxed process's command line (tests count them)
BOOT_HEAD = BOOT_MARK + """
import sys, types
sys.argv = sys.argv[1:]
with open(sys.argv[0], "rb") as _f:
    _code = compile(_f.read(), sys.argv[0], "exec", dont_inherit=True)
del _f
"""
BOOT_RUN = """
_main = types.ModuleType("__main__")
_main.__file__ = sys.argv[0]
_main.__builtins__ = __builtins__
sys.modules["__main__"] = _main
exec(_code, _main.__dict__)
"""

# Defence in depth when the program runs as our own user: refuse the calls that would let it hurt
# the evaluator or files outside its directory. Python-level only (ctypes gets around it).
GUARD = r'''
def _wmtp_guard():
    import builtins, io, os, _posixsubprocess
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
_wmtp_guard()
del _wmtp_guard
'''

# No network namespace: sockets cannot be created from Python (socket.py subclasses _socket.socket,
# so patching the C type before `import socket` covers socket.socket, create_connection, ...).
BLOCK_SOCKETS = r'''
import _socket
class _NoSocket(_socket.socket):
    def __init__(self, *args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")
_socket.socket = _socket.SocketType = _NoSocket
del _NoSocket
'''
