"""Constants every layer shares (core: imports nothing from the package)."""

IGNORE_INDEX = -100  # label of a position without a target (prompt, padding); HF and torch's default
