"""Per-token loss weights for weighted MTP training: advantages, whitening, schemes, statistics."""

from weighted_mtp.weighting.advantage import gae_advantages, td_errors
from weighted_mtp.weighting.schemes import (
    WEIGHTINGS,
    Weighting,
    WeightingContext,
    WeightingInputs,
    WeightingResult,
    combined,
    critic,
    random_matched,
    rho1,
    shuffled,
    uniform,
)
from weighted_mtp.weighting.statistics import distance_to_end_correlation, weight_statistics
from weighted_mtp.weighting.whitening import RunningMoments

__all__ = [
    "WEIGHTINGS",
    "RunningMoments",
    "Weighting",
    "WeightingContext",
    "WeightingInputs",
    "WeightingResult",
    "combined",
    "critic",
    "distance_to_end_correlation",
    "gae_advantages",
    "random_matched",
    "rho1",
    "shuffled",
    "td_errors",
    "uniform",
    "weight_statistics",
]
