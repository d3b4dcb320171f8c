"""Training MTP heads on a frozen model: cached head-1 states from self-distillation or data."""
