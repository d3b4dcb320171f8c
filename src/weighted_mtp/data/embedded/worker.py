"""Child process of verify.run_tests. Standard library only, and it imports nothing from the
package, so that a heavy package __init__ never slows it down: verify.py runs this file by path.

Protocol: stdin holds one JSON object {"limit": seconds, "items": [[code, test_code], ...]}.
For each item, in order, the worker execs the code and then the tests in a fresh namespace and
writes one line, "1" (every assert passed) or "0" (anything raised, or it ran out of time), and
flushes it at once, so that the parent knows how far it got if this process dies.

Limits per item: `limit` seconds of CPU time (ITIMER_PROF, so a loaded machine does not fail a
correct solution) and a looser wall-clock limit (ITIMER_REAL, for solutions that sleep). A hang
inside C code that ignores signals is left to the parent's deadline.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import sys


class _TimeLimit(BaseException):
    """BaseException, so that a solution's own `except Exception:` cannot swallow it."""


def _on_alarm(signum, frame):
    raise _TimeLimit()


def _arm(limit: float) -> None:
    signal.setitimer(signal.ITIMER_PROF, limit)
    signal.setitimer(signal.ITIMER_REAL, limit * 4 + 1.0)


def _disarm() -> None:
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)


def _run_one(code: str, tests: str, limit: float) -> bool:
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    _arm(limit)
    try:
        exec(compile(code, "<solution>", "exec"), namespace)
        exec(compile(tests, "<tests>", "exec"), namespace)
        ok = True
    except BaseException:  # failed assert, crash, SystemExit, time limit: all mean "not correct"
        ok = False
    finally:
        _disarm()
    return ok


def _limit_resources() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cap = 2 * 1024 ** 3
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard if hard != resource.RLIM_INFINITY else cap))
    except (ImportError, ValueError, OSError):
        pass


def main() -> int:
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # solutions must not import this package's modules by accident
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    limit = float(job["limit"])
    items = job["items"]

    out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)  # solutions' prints (and C-level writes) go nowhere
    sys.stdout = open(os.devnull, "w")
    sys.stdin = io.StringIO("")
    signal.signal(signal.SIGPROF, _on_alarm)
    signal.signal(signal.SIGALRM, _on_alarm)
    _limit_resources()

    for code, tests in items:
        try:
            ok = _run_one(code, tests, limit)
        except _TimeLimit:  # fired in the narrow window after the item finished
            _disarm()
            ok = False
        out.write(b"1\n" if ok else b"0\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
