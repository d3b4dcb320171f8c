"""All problem families, and drawing a set of problems with distinct instructions.

Families live in the fam_*.py modules (one theme each); a family is `f(rng) -> Problem`.
The order of FAMILIES is part of the generator: changing it changes every dataset, so bump
build.VERSION when editing it (or any family)."""

from __future__ import annotations

import random

from weighted_mtp.data.embedded import (
    fam_aggregate, fam_arith, fam_numbers, fam_reorder, fam_sequences, fam_strings, fam_text, fam_transform,
)
from weighted_mtp.data.embedded.base import Problem

FAMILIES = (
    fam_aggregate.FAMILIES
    + fam_transform.FAMILIES
    + fam_reorder.FAMILIES
    + fam_strings.FAMILIES
    + fam_text.FAMILIES
    + fam_numbers.FAMILIES
    + fam_sequences.FAMILIES
    + fam_arith.FAMILIES
)

# A family that yields this many already-seen instructions in a row is considered exhausted.
_MAX_MISSES = 200


def instruction_key(text: str) -> str:
    """Instructions that differ only in case or spacing count as the same instruction."""
    return " ".join(text.lower().split())


def generate_problems(rng: random.Random, n: int) -> list[Problem]:
    """Draw up to `n` problems with pairwise distinct instructions, cycling through the families
    in a freshly shuffled order each round so every family is about equally represented. Fewer
    than `n` come back only if every family runs out of new instructions."""
    seen: set[str] = set()
    out: list[Problem] = []
    misses = {fam.__name__: 0 for fam in FAMILIES}
    active = list(FAMILIES)
    while len(out) < n and active:
        order = list(active)
        rng.shuffle(order)
        for fam in order:
            if len(out) >= n:
                break
            p = fam(rng)
            key = instruction_key(p.instruction)
            if key in seen or not p.correct or not p.tests:
                misses[fam.__name__] += 1
                if misses[fam.__name__] >= _MAX_MISSES:
                    active.remove(fam)
                continue
            misses[fam.__name__] = 0
            seen.add(key)
            out.append(p)
    return out
