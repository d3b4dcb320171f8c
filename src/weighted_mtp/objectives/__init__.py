"""Objectives by name. `experiment.stage` in a config picks one; a plain dict, no registry."""

from weighted_mtp.objectives.base import Objective, ObjectiveOutput
from weighted_mtp.objectives.baseline import BaselineObjective
from weighted_mtp.objectives.clara import ClaraObjective
from weighted_mtp.objectives.critic import CriticObjective
from weighted_mtp.objectives.mtp_heads import MTPHeadsObjective
from weighted_mtp.objectives.rho1 import Rho1Objective
from weighted_mtp.objectives.steper import StepERObjective
from weighted_mtp.objectives.verifiable import VerifiableObjective

OBJECTIVES = {
    "baseline": BaselineObjective,
    "critic": CriticObjective,
    "verifiable": VerifiableObjective,
    "rho1": Rho1Objective,
    "steper": StepERObjective,
    "mtp_heads": MTPHeadsObjective,
    "clara_stage1": ClaraObjective,
    "clara_stage2": ClaraObjective,
    "clara_stage3": ClaraObjective,
}

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput"]
