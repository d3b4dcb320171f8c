"""Objectives by name. `experiment.stage` in a config picks one; a plain dict, no registry."""

from weighted_mtp.objectives.base import Objective, ObjectiveOutput
from weighted_mtp.objectives.baseline import BaselineObjective

OBJECTIVES = {
    "baseline": BaselineObjective,
}

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput"]
