"""The built-in objectives. Importing this package registers each one under its stage names in
`weighted_mtp.config.registry.OBJECTIVES` (re-exported here); `experiment.stage` picks one."""

from weighted_mtp.config.registry import OBJECTIVES, register_objective
from weighted_mtp.objectives.base import Objective, ObjectiveOutput
from weighted_mtp.objectives.baseline import BaselineObjective
from weighted_mtp.objectives.clara import ClaraObjective
from weighted_mtp.objectives.critic import CriticObjective
from weighted_mtp.objectives.mtp_heads import MTPHeadsObjective
from weighted_mtp.objectives.rho1 import Rho1Objective
from weighted_mtp.objectives.steper import StepERObjective
from weighted_mtp.objectives.verifiable import VerifiableObjective

__all__ = ["OBJECTIVES", "BaselineObjective", "ClaraObjective", "CriticObjective", "MTPHeadsObjective", "Objective",
           "ObjectiveOutput", "Rho1Objective", "StepERObjective", "VerifiableObjective", "register_objective"]
