"""The sandbox against hostile programs: each test checks that the damage did not happen, how the
run was classified, and that a normal program still passes afterwards. Small limits keep it fast.

Run with WMTP_SANDBOX_MODE=no-namespaces or =guard to check the fallbacks of machines without
namespaces (or without root)."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest

from weighted_mtp.eval.sandbox import SandboxLimits, run_program, run_programs, sandbox_mode

LIMITS = SandboxLimits(cpu_s=2, wall_s=4)
FAST = SandboxLimits(cpu_s=1, wall_s=2.5)   # for the programs that run into a limit
MARK = b"wmtp-sandbox program"


def still_works() -> None:
    res = run_program("assert sum(range(4)) == 6\nprint('fine')", LIMITS)
    assert res.status == "passed" and res.stdout_tail == "fine\n", res


def sandboxed_processes() -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    n += MARK in f.read()
            except OSError:
                pass
    return n


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
    deadline = time.monotonic() + 5
    while sandboxed_processes() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandboxed_processes() <= before
    still_works()


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
    res = run_program("open('out.txt', 'w').write('x' * 1000)\nimport os\nprint(os.listdir('.'))", LIMITS)
    assert res.status == "passed" and "out.txt" in res.stdout_tail, res
    res = run_program("open('out.txt', 'w').write('x')\nwhile True:\n    pass", FAST)
    assert res.status == "timeout"
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
