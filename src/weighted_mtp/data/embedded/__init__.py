"""The embedded default dataset: generated, verifiable Python programming problems.

Nothing is downloaded. `build_embedded_dataset(out_dir, seed, n_problems)` draws problems from
parameterised families (families.py), labels every solution by running its tests in worker
subprocesses (verify.py), splits by problem and writes JSONL files (build.py)."""

from weighted_mtp.data.embedded.build import VERSION, build_embedded_dataset, corpus_texts
from weighted_mtp.data.embedded.verify import run_tests

__all__ = ["VERSION", "build_embedded_dataset", "corpus_texts", "run_tests"]
