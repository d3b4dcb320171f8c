"""Library messages go through `logging`, under the `weighted_mtp` logger, and only rank 0 of a
distributed run emits them.

Modules write `log = get_logger(__name__)` and `log.info(...)`. The package logger has one
handler, installed here, that writes each message as it is (messages carry their own `note:` or
`warning:` prefix): INFO to stdout, WARNING and above to stderr, so the command line reads as it
did when these were prints. It looks up `sys.stdout`/`sys.stderr` when it writes, so redirection
and pytest's capture see it. The package logger does not propagate (no second copy through a root
handler someone else configured); to route the messages through your own handlers instead, remove
`HANDLER` from it and set its `propagate` back to True.
"""

from __future__ import annotations

import logging
import os
import sys

PACKAGE_LOGGER = "weighted_mtp"


def process_rank() -> int:
    """This process's rank: torch.distributed's once it is initialised, else $RANK (torchrun sets
    it before the process group exists), else 0."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class RankZeroFilter(logging.Filter):
    """Passes records only on rank 0, so N processes print one copy of each message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return process_rank() == 0


class _ConsoleHandler(logging.Handler):
    """INFO and below to the current sys.stdout, WARNING and above to the current sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


HANDLER = _ConsoleHandler()
HANDLER.setFormatter(logging.Formatter("%(message)s"))
HANDLER.addFilter(RankZeroFilter())

_package = logging.getLogger(PACKAGE_LOGGER)
if not any(isinstance(h, _ConsoleHandler) for h in _package.handlers):
    _package.addHandler(HANDLER)
    _package.propagate = False
if _package.level == logging.NOTSET:
    _package.setLevel(logging.INFO)


def get_logger(name: str) -> logging.Logger:
    """The logger for module `name` (pass `__name__`); a child of the package logger."""
    return logging.getLogger(name)
