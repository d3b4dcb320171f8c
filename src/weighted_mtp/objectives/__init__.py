"""Objectives by name. `experiment.stage` in a config picks one; a plain dict, no registry."""

from weighted_mtp.objectives.base import Objective, ObjectiveOutput
from weighted_mtp.objectives.baseline import BaselineObjective
from weighted_mtp.objectives.critic import CriticObjective

OBJECTIVES = {
    "baseline": BaselineObjective,
    "critic": CriticObjective,
}

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput"]
