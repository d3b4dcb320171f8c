"""training.cached_run.run_key: a cached run is keyed by what can change it: its own method's
section and the shared ones, not another method's section."""

from __future__ import annotations

from pathlib import Path

import weighted_mtp.objectives  # noqa: F401 - registers the objectives and their sections
from weighted_mtp.config import load_config
from weighted_mtp.training.cached_run import run_key

HEADS = Path(__file__).resolve().parents[1] / "configs" / "mtp_heads" / "sequential_smollm2.yaml"


def test_other_methods_sections_do_not_change_the_key():
    base = run_key(load_config(HEADS, []))
    assert run_key(load_config(HEADS, ["clara.text_docs=5"])) == base
    assert run_key(load_config(HEADS, ["steper.world_seed=7"])) == base
    assert run_key(load_config(HEADS, ["mtp_heads.max_new_tokens=64"])) != base  # its own section
    assert run_key(load_config(HEADS, ["training.learning_rate=0.001"])) != base  # a shared one
