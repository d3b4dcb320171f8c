"""The embedded StepER student: a blank micro Llama whose byte-level BPE tokenizer is trained on
the synthetic world's text, so an entity name costs one or two tokens and a 20-passage prompt
fits a few hundred. Distilling into it is what the demo measures; any HF causal LM directory
can be the student instead (`models.policy.path`)."""

from __future__ import annotations

from pathlib import Path

from weighted_mtp.models.micro import MICRO_LLAMA, ensure_built_model
from weighted_mtp.world.world import build_world, world_texts

STUDENT_VERSION = 2
# The micro model's architecture, narrower (a 4k world vocabulary needs less width than code).
STEPER_STUDENT = {**MICRO_LLAMA, "hidden_size": 192, "intermediate_size": 512, "num_key_value_heads": 4}


def ensure_steper_student(world_seed: int = 0, seed: int = 0, vocab_size: int = 4096) -> Path:
    key = {"v": STUDENT_VERSION, "arch": STEPER_STUDENT, "seed": seed, "vocab": vocab_size, "world_seed": world_seed}
    return ensure_built_model("steper-student", key, lambda: world_texts(build_world(seed=world_seed)), seed,
                              vocab_size, STEPER_STUDENT)
