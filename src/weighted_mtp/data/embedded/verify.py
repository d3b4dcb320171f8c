"""Decide whether solutions are correct by running their tests in subprocesses.

`run_tests(items)` takes (code, test_code) pairs and returns one bool per pair: True when the
code and then the tests ran in a fresh namespace without raising, within the time limit.

Speed: items are cut into batches and each batch runs in one worker subprocess (worker.py), two
at a time. The worker reports one line per item as it goes, so when a batch process dies (a
solution called os._exit, or blew the memory cap) or stops answering (a hang in C code, past the
wall-clock deadline), the parent knows which item was running: that item is re-run alone in its
own subprocess, with a timeout, to decide it, and the rest of the batch continues in a new worker.
Results never depend on timing except through the time limits, and the hash seed of the workers
is fixed, so the same items give the same answers.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

_WORKER = str(Path(__file__).with_name("worker.py"))
_STARTUP_S = 5.0      # slack for the interpreter to start on a loaded machine
_BATCH = 600          # items per worker process
_PARALLEL = 2


def _wall_per_item(timeout_s: float) -> float:
    # The worker stops an item after timeout_s of CPU time (or 4x+1 s of wall time); this
    # deadline only catches what the worker cannot stop itself.
    return timeout_s * 6 + 3.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"            # set/dict-of-str order must not vary between runs
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _start(items: Sequence[tuple[str, str]], timeout_s: float, cwd: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-s", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, cwd=cwd, env=_env(), start_new_session=True,
    )
    payload = json.dumps({"limit": timeout_s, "items": [list(it) for it in items]}).encode("utf-8")
    try:
        assert proc.stdin is not None
        proc.stdin.write(payload)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the worker died at start; reading its output below finds that out
    return proc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 9)  # the worker's own session: it and anything it started
        except (ProcessLookupError, PermissionError):
            proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _read_results(proc: subprocess.Popen, n: int, timeout_s: float) -> list[bool]:
    """Read up to n result lines; stop early if the worker dies or misses a deadline."""
    assert proc.stdout is not None
    results: list[bool] = []
    buf = b""
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + _STARTUP_S + _wall_per_item(timeout_s)
    try:
        while len(results) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break  # hung
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # died (or finished)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if lines:
                results.extend(line.strip() == b"1" for line in lines if line.strip())
                deadline = time.monotonic() + _wall_per_item(timeout_s)
    finally:
        sel.close()
        _kill(proc)
    return results[:n]


def _run_alone(item: tuple[str, str], timeout_s: float, cwd: str) -> bool:
    proc = _start([item], timeout_s, cwd)
    got = _read_results(proc, 1, timeout_s)
    return bool(got and got[0])


def _run_batch(items: Sequence[tuple[str, str]], timeout_s: float, cwd: str) -> list[bool]:
    results: list[bool] = []
    while len(results) < len(items):
        rest = items[len(results):]
        got = _read_results(_start(rest, timeout_s, cwd), len(rest), timeout_s)
        results.extend(got)
        if len(got) < len(rest):
            # The item after the last answered one killed or hung the worker: decide it alone.
            results.append(_run_alone(rest[len(got)], timeout_s, cwd))
    return results


def run_tests(items: list[tuple[str, str]], timeout_s: float = 2.0) -> list[bool]:
    """For each (code, test_code), True iff exec(code) then exec(test_code) raise nothing within
    `timeout_s` seconds of CPU time. Runs in subprocesses, never in this process."""
    items = [(str(c), str(t)) for c, t in items]
    if not items:
        return []
    n_batches = max(1, -(-len(items) // _BATCH))
    if len(items) >= _PARALLEL:
        n_batches = max(n_batches, _PARALLEL)
    size = -(-len(items) // n_batches)
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    with tempfile.TemporaryDirectory(prefix="wmtp_verify_") as cwd:
        if len(batches) == 1:
            parts = [_run_batch(batches[0], timeout_s, cwd)]
        else:
            with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
                parts = list(pool.map(lambda b: _run_batch(b, timeout_s, cwd), batches))
    return [ok for part in parts for ok in part]


def main() -> int:
    """`python -m weighted_mtp.data.embedded.verify < items.json`: items is a JSON list of
    [code, test_code]; prints a JSON list of booleans."""
    items = [tuple(it) for it in json.load(sys.stdin)]
    print(json.dumps(run_tests(items)))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
