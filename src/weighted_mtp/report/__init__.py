"""Compare training arms: `write_report(run_dirs, output_dir)` writes report.md and a
self-contained report.html (validation CE, weight statistics, pass@k with confidence intervals,
training curves, token-weight histograms and heat maps) and attaches them to each run's MLflow
run. `wmtp report RUN_DIR...` is the command-line form."""

from weighted_mtp.report.collect import EvalResult, RunSummary, collect_run
from weighted_mtp.report.render import default_output_dir, write_report
from weighted_mtp.report.stats import bootstrap_ci, mean_ci_over_seeds
from weighted_mtp.report.token_weights import TokenWeightSample, WeightedExample, example_token_weights

__all__ = ["EvalResult", "RunSummary", "TokenWeightSample", "WeightedExample", "bootstrap_ci", "collect_run",
           "default_output_dir", "example_token_weights", "mean_ci_over_seeds", "write_report"]
