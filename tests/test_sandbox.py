"""The sandbox against hostile programs: each test checks that the damage did not happen, how the
run was classified, and that a normal program still passes afterwards (usually in the same warm
worker, so a program that breaks its worker or leaves state behind is caught). Small limits keep
it fast.

Run with WMTP_SANDBOX_MODE=no-namespaces or =guard to check the fallbacks of machines without
namespaces (or without root)."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest

from weighted_mtp.eval.sandbox import SandboxLimits, run_program, run_programs, sandbox_mode, shutdown_workers
from weighted_mtp.eval.sandbox_worker import POOL

LIMITS = SandboxLimits(cpu_s=2, wall_s=4)
FAST = SandboxLimits(cpu_s=1, wall_s=2.5)   # for the programs that run into a limit
PROGRAM_NAME = "wmtp-sandbox-p"   # /proc/<pid>/comm of every program process (sandbox_child.py)


def still_works() -> None:
    res = run_program("assert sum(range(4)) == 6\nprint('fine')", LIMITS)
    assert res.status == "passed" and res.stdout_tail == "fine\n", res


def sandboxed_processes() -> int:
    """Program processes of this test process's sandbox (others may be evaluating on this machine
    too): our descendants, or processes running as a sandbox uid one of our workers holds."""
    uids = {w.slot.uid for w in POOL.workers() if w.slot is not None}
    parent, uid, name = {}, {}, {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
                parent[int(pid)] = int(stat[stat.rindex(b")") + 2:].split()[1])
                name[int(pid)] = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode()
                uid[int(pid)] = os.stat(f"/proc/{pid}").st_uid
            except (OSError, ValueError):
                pass
    def ours(pid: int) -> bool:
        seen = set()
        while pid > 1 and pid not in seen:
            if pid == os.getpid():
                return True
            seen.add(pid)
            pid = parent.get(pid, 0)
        return False
    return sum(1 for pid in name if name[pid] == PROGRAM_NAME and (uid[pid] in uids or ours(pid)))


def one_worker() -> None:
    """Start from an empty pool: sequential programs after this run in one and the same worker."""
    shutdown_workers()
    assert POOL.idle_count() == 0


def test_passing_program_and_stdin():
    res = run_program("import sys\nprint(sys.stdin.read().upper())", LIMITS, stdin="abc\n")
    assert res.status == "passed" and res.returncode == 0
    assert res.stdout_tail == "ABC\n\n"


def test_failing_assert():
    res = run_program("def f():\n    return 1\nassert f() == 2", LIMITS)
    assert res.status == "failed" and res.returncode == 1
    assert "AssertionError" in res.stderr_tail


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exit_before_the_tests_is_failed(exit_call):
    res = run_program(f"{exit_call}\nassert False, 'never reached'", LIMITS)
    assert res.status == "failed" and res.returncode == 0
    still_works()


def test_infinite_loop_times_out():
    res = run_program("while True:\n    pass", FAST)
    assert res.status == "timeout"
    assert res.wall_s < FAST.wall_s + 2
    still_works()


def test_sleeping_program_hits_the_wall_clock():
    res = run_program("import time\ntime.sleep(60)", SandboxLimits(cpu_s=2, wall_s=1.5))
    assert res.status == "timeout" and res.wall_s < 3.5


def test_huge_allocation_fails():
    res = run_program("x = bytearray(10 * 2**30)\nprint(len(x))", LIMITS)
    assert res.status in ("failed", "error")
    still_works()


def test_writing_outside_its_directory(tmp_path):
    target = tmp_path / "escaped.txt"
    res = run_program(f"with open({str(target)!r}, 'w') as f:\n    f.write('x')", LIMITS)
    assert not target.exists()
    assert res.status == "failed"
    still_works()


def test_world_writable_tmp_is_private():
    if "mount" not in sandbox_mode().namespaces:
        pytest.skip(f"no mount namespace here ({sandbox_mode().describe()})")
    target = f"/tmp/wmtp_escape_{os.getpid()}_{time.monotonic_ns()}"
    res = run_program(f"open({target!r}, 'w').write('x')", LIMITS)
    assert not os.path.exists(target)
    # as root it wrote to its own private /tmp; otherwise the guard refused before the mount mattered
    assert res.status == ("failed" if sandbox_mode().guard else "passed"), res


def test_rmtree_outside_its_directory(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "data.txt").write_text("precious")
    res = run_program(f"import shutil\nshutil.rmtree({str(keep)!r})", LIMITS)
    assert (keep / "data.txt").read_text() == "precious"
    assert res.status == "failed"
    still_works()


def test_killing_its_parent():
    res = run_program("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('survived')", LIMITS)
    assert res.status != "passed"
    still_works()  # and this process is still here


def test_killing_the_evaluator_by_pid():
    res = run_program(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)", LIMITS)
    assert res.status != "passed"
    still_works()


def test_fork_bomb_is_contained():
    one_worker()
    before = sandboxed_processes()
    bomb = ("import os\n"
            "while True:\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            os.setsid()\n"          # children try to leave the session
            "    except Exception:\n"
            "        pass\n")
    start = time.monotonic()
    res = run_program(bomb, FAST)
    assert res.status in ("timeout", "error", "failed")
    assert time.monotonic() - start < FAST.wall_s + 5
    assert sandboxed_processes() == before == 0   # killed and reaped before the result came back
    still_works()
    if not sandbox_mode().guard:   # the process budget is whole again for the next program
        res = run_program("import os\npids = []\nfor _ in range(24):\n    pid = os.fork()\n"
                          "    if pid == 0:\n        import time; time.sleep(0.2); os._exit(0)\n    pids.append(pid)\n"
                          "print(sum(os.waitpid(p, 0)[1] for p in pids), len(pids))", LIMITS)
        assert res.status == "passed" and res.stdout_tail == "0 24\n", res


def test_no_network():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        res = run_program(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                          "s.sendall(b'hello')", LIMITS)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert res.status == "failed"
    still_works()


def test_temp_directory_removed(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    one_worker()   # a worker without a mount namespace keeps its run directories in the temp dir
    res = run_program("open('out.txt', 'w').write('x' * 1000)\nimport os\nprint(os.getcwd(), os.listdir('.'))", LIMITS)
    assert res.status == "passed" and "['out.txt']" in res.stdout_tail, res
    work = res.stdout_tail.split()[0]
    res = run_program("import os\nprint(os.getcwd(), os.listdir('.'))", LIMITS)   # the same worker
    assert res.status == "passed" and res.stdout_tail.endswith(" []\n"), res
    if "mount" not in sandbox_mode().namespaces:   # run directories on the host: gone after each run
        assert not os.path.exists(work)
    res = run_program("open('out.txt', 'w').write('x')\nwhile True:\n    pass", FAST)
    assert res.status == "timeout"
    shutdown_workers()
    assert list(scratch.iterdir()) == []


def test_large_output_keeps_the_tail():
    res = run_program("for i in range(200000):\n    print(i)", LIMITS)
    assert res.status == "passed"
    assert res.stdout_tail.endswith("199999\n") and len(res.stdout_tail) <= 2048


def test_run_programs_mixed_list_in_order():
    sources = [
        "print('a')",
        "assert 1 == 2",
        "import time\ntime.sleep(60)",
        "raise SystemExit(3)",
        "import os\nos._exit(0)",
        "print('b')",
    ]
    results = run_programs(sources, SandboxLimits(cpu_s=2, wall_s=3), workers=2)
    assert [r.status for r in results] == ["passed", "failed", "timeout", "failed", "failed", "passed"]
    assert results[0].stdout_tail == "a\n" and results[5].stdout_tail == "b\n"
    assert results[3].returncode == 3


def test_next_program_in_the_same_worker_starts_clean():
    """Whatever a program changes or leaves behind (a live daemon, files in its directory, /tmp and
    /dev/shm, module and builtin state, the environment, a SysV message queue), the next program in
    the same worker sees none of it."""
    one_worker()
    mode = sandbox_mode()
    tag = f"wmtp_leak_{os.getpid()}_{time.monotonic_ns()}"
    key = 0x5EED0000 + os.getpid() % 0xFFFF
    dirty = [
        "import builtins, json, os, random, sys",
        "builtins.len = None",
        "json.dumps = None",
        "sys.modules['math'] = None",
        "os.environ['LEFT_BEHIND'] = '1'",
        "open('left.txt', 'w').write('x')",
        "print(random.random())",
    ]
    if not mode.guard:   # (the guard refuses fork and writes outside the working directory)
        dirty += [
            f"open('/tmp/{tag}', 'w').write('x')",
            f"open('/dev/shm/{tag}', 'w').write('x')" if os.path.isdir("/dev/shm") else "",
            "r, w = os.pipe()",
            "if os.fork() == 0:",
            "    os.setsid()",
            "    if os.fork() == 0:",
            "        os.write(w, str(os.getpid()).encode())",
            "        import time; time.sleep(60)",
            "    os._exit(0)",
            "print(os.read(r, 100).decode())",
        ]
    if mode.namespaces:
        dirty += ["import ctypes", f"assert ctypes.CDLL(None).msgget({key}, 0o1600) >= 0"]
    res = run_program("\n".join(dirty), LIMITS)
    assert res.status == "passed", res
    lines = res.stdout_tail.split()
    daemon = int(lines[1]) if not mode.guard else None
    check = [
        "import json, math, os, random",
        "assert len([1, 2]) == 2 and json.dumps([1]) == '[1]' and math.sqrt(4) == 2.0",
        "assert 'LEFT_BEHIND' not in os.environ",
        "assert os.listdir('.') == [], os.listdir('.')",
        f"assert not os.path.exists('/tmp/{tag}') and not os.path.exists('/dev/shm/{tag}')",
        "print(random.random())",
    ]
    if daemon is not None:
        check += ["try:", f"    os.kill({daemon}, 0)", "    print('alive')",
                  "except (ProcessLookupError, PermissionError):", "    print('gone')"]
    if mode.namespaces:
        check += ["import ctypes", f"assert ctypes.CDLL(None).msgget({key}, 0) == -1"]
    res = run_program("\n".join(check), LIMITS)
    assert res.status == "passed", res
    assert res.stdout_tail.split()[0] != lines[0]   # random is seeded afresh
    if daemon is not None:
        assert res.stdout_tail.split()[1] == "gone"
    assert POOL.idle_count() == 1   # it was the same worker all along
    assert not os.path.exists(f"/tmp/{tag}") and not os.path.exists(f"/dev/shm/{tag}")
    if mode.namespaces:   # the queue never reached this machine's IPC namespace
        import ctypes
        assert ctypes.CDLL(None).msgget(key, 0) == -1


@pytest.mark.parametrize("attack", [
    "os.kill(os.getppid(), signal.SIGKILL)",
    "os.kill(1, signal.SIGKILL)",
    "os.kill(-1, signal.SIGKILL)",
    "os.killpg(0, signal.SIGKILL)",
])
def test_signalling_the_worker_does_not_break_the_next_program(attack):
    one_worker()
    res = run_program(f"import os, signal\n{attack}\nimport time\ntime.sleep(0.2)\nprint('survived')", LIMITS)
    assert res.status in ("passed", "failed", "error"), res
    still_works()


def test_no_descriptors_leak_into_the_program():
    res = run_program("import os\nprint(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))", LIMITS)
    assert res.status == "passed", res
    fds = eval(res.stdout_tail)
    assert fds[:3] == [0, 1, 2] and len(fds) <= 4, fds   # 0-2, and the descriptor listdir itself holds


def test_concurrent_programs_get_their_own_uid():
    if not sandbox_mode().drop_uid:
        pytest.skip(f"not root here ({sandbox_mode().describe()})")
    results = run_programs(["import os, time\ntime.sleep(0.5)\nprint(os.getuid())"] * 2, LIMITS, workers=2)
    uids = {int(r.stdout_tail) for r in results}
    assert len(uids) == 2 and all(u != os.getuid() for u in uids), results


def test_exit_like_the_interpreter():
    cases = [
        ("raise SystemExit('bye')", "failed", 1, "", "bye\n"),
        ("import sys\nsys.exit(7)", "failed", 7, "", ""),
        ("import atexit\natexit.register(print, 'at exit')\nprint('main')", "passed", 0, "main\nat exit\n", ""),
        ("import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('joined'))).start()",
         "passed", 0, "joined\n", ""),
        ("import sys\nsys.stdout.write('unflushed')", "passed", 0, "unflushed", ""),
    ]
    results = run_programs([c[0] for c in cases], LIMITS, workers=2)
    for (_, status, rc, out, err), res in zip(cases, results):
        assert (res.status, res.returncode, res.stdout_tail) == (status, rc, out), res
        assert res.stderr_tail.endswith(err), res


def test_traceback_shows_only_the_program():
    res = run_program("def f(x):\n    return 1 / x\nf(0)", LIMITS)
    assert res.status == "failed" and res.returncode == 1
    assert res.stderr_tail.startswith("Traceback (most recent call last):\n  File \"../program.py\", line 3"), res
    assert "<string>" not in res.stderr_tail
    assert res.stderr_tail.rstrip().endswith("ZeroDivisionError: division by zero")


def test_pool_keeps_one_worker_per_concurrent_run():
    shutdown_workers()
    results = run_programs([f"print({i})" for i in range(12)], LIMITS, workers=3)
    assert [r.stdout_tail for r in results] == [f"{i}\n" for i in range(12)]
    assert 1 <= POOL.idle_count() <= 3


def test_a_forked_evaluator_starts_its_own_workers():
    """A child of the evaluator (a DataLoader worker, multiprocessing) never uses or kills its
    parent's workers; the parent's keep serving."""
    still_works()
    idle = POOL.idle_count()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - runs in the child
        try:
            os.close(r)
            ok = POOL.idle_count() == 0 and run_program("print('child')", LIMITS).stdout_tail == "child\n"
            shutdown_workers()
            os.write(w, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 10) == b"ok"
    os.close(r)
    os.waitpid(pid, 0)
    assert POOL.idle_count() == idle
    still_works()


def test_source_that_is_not_valid_unicode_is_an_error_not_a_crash():
    results = run_programs(["print('\udc80')", "print('next')"], LIMITS, workers=1)
    assert results[0].status == "error" and "UnicodeEncodeError" in results[0].stderr_tail
    assert results[1].status == "passed" and results[1].stdout_tail == "next\n"
