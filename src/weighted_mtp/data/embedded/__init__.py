"""The embedded default dataset: generated, verifiable Python programming problems.

Nothing is downloaded. `build_embedded_dataset(out_dir, seed, n_problems)` draws problems from
parameterised families (families.py), labels every solution by running its tests in worker
subprocesses (verify.py), splits by problem and writes JSONL files (build.py).

Names are imported lazily (PEP 562), so that `python -m weighted_mtp.data.embedded.verify`
does not import its own module twice."""

from __future__ import annotations

from typing import Any

__all__ = ["VERSION", "build_embedded_dataset", "corpus_texts", "run_tests"]


def __getattr__(name: str) -> Any:
    if name in ("VERSION", "build_embedded_dataset", "corpus_texts"):
        from weighted_mtp.data.embedded import build

        return getattr(build, name)
    if name == "run_tests":
        from weighted_mtp.data.embedded.verify import run_tests

        return run_tests
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
