"""Metrics go to `metrics.jsonl` (one JSON object per logging event) and to MLflow. MLflow's
sqlite store is slow per call, so each event is one batched `log_metrics` call."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


class MetricLogger:
    def __init__(self, run_dir: Path, *, mlflow_enabled: bool, tracking_uri: str | None,
                 experiment: str, run_name: str, params: dict, tags: dict | None = None, resume: bool = False):
        self.path = run_dir / "metrics.jsonl"
        self._file = open(self.path, "a" if resume else "w")
        self._mlflow = None
        self.tracking_uri = tracking_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        if mlflow_enabled:
            import mlflow

            mlflow.set_tracking_uri(self.tracking_uri)
            if mlflow.get_experiment_by_name(experiment) is None:
                # Artifacts live in the run directory too, never in ./mlruns of the caller's CWD.
                mlflow.create_experiment(experiment, artifact_location=(run_dir / "mlflow-artifacts").resolve().as_uri())
            mlflow.set_experiment(experiment)
            run_id_file = run_dir / "mlflow_run_id"
            run_id = run_id_file.read_text().strip() if resume and run_id_file.is_file() else None
            active = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
            if run_id is None:
                run_id_file.write_text(active.info.run_id)
                mlflow.set_tags(tags or {})
                flat = {k: str(v)[:500] for k, v in flatten(params).items()}
                items = list(flat.items())
                for i in range(0, len(items), 100):
                    mlflow.log_params(dict(items[i:i + 100]))
            self._mlflow = mlflow

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")
        self._file.flush()
        if self._mlflow is not None:
            finite = {k.replace("@", "_at_"): v for k, v in clean.items() if math.isfinite(v)}
            if finite:
                self._mlflow.log_metrics(finite, step=step)

    def log_artifact(self, path: Path) -> None:
        if self._mlflow is not None:
            self._mlflow.log_artifact(str(path))

    def close(self, status: str = "FINISHED") -> None:
        self._file.close()
        if self._mlflow is not None:
            self._mlflow.end_run(status=status)
            self._mlflow = None


class NullLogger:
    """What processes other than rank 0 log to: nothing (rank 0 logs the all-reduced metrics)."""

    def __init__(self, tracking_uri: str = ""):
        self.tracking_uri = tracking_uri

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass
