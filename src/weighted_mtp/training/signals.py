"""A polite stop: SIGTERM (what schedulers and `kill` send before SIGKILL) only sets a flag; the
loop finishes the optimizer step it is in, saves a checkpoint and returns normally, so the run
exits with status 0 and `--resume` continues exactly where it stopped. Under torchrun every
process receives the signal; the loop agrees on the stop across processes each step."""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM,)


class StopRequest:
    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers only install there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
