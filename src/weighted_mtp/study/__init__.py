"""`wmtp study`: does a token weighting change code generation? Every arm trained for every seed
(with the stages it depends on), evaluated with pass@k, and compared with the uniform baseline
by paired tests over tasks. `plan.py` builds the per-seed DAG of stages, `runner.py` trains a
stage resumably, `evaluation.py` scores an arm, `analysis.py` computes the statistics and
`report.py` writes them; `run.py` ties them together."""

from weighted_mtp.study.evaluation import StudyEvalSettings
from weighted_mtp.study.plan import DEFAULT_ARMS, Stage, StudyPlan, plan_study
from weighted_mtp.study.run import StudyResult, run_study

__all__ = ["DEFAULT_ARMS", "Stage", "StudyEvalSettings", "StudyPlan", "StudyResult", "plan_study", "run_study"]
