"""Constants every layer shares (core: imports nothing from the package)."""

MODEL_SUBDIR = "model"  # a checkpoint's HF-loadable model directory (written by training, read by models.load)
IGNORE_INDEX = -100  # label of a position without a target (prompt, padding); HF and torch's default
