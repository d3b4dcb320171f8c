"""Shared fixtures. Everything is built locally (no hub): the cache of embedded data and the
micro model lives in one temporary directory per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import weighted_mtp.objectives  # noqa: E402,F401  (registers the built-in objectives before any config loads)

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Tests under tests/integration/ are end-to-end runs: marked `slow`, so `-m "not slow"` skips them."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def wmtp_cache(tmp_path_factory):
    """One cache per session, unless the developer points WMTP_CACHE somewhere to reuse."""
    if "WMTP_TEST_CACHE" in os.environ:
        os.environ["WMTP_CACHE"] = os.environ["WMTP_TEST_CACHE"]
    else:
        os.environ["WMTP_CACHE"] = str(tmp_path_factory.mktemp("wmtp_cache"))
    return Path(os.environ["WMTP_CACHE"])


@pytest.fixture(scope="session")
def micro_model_dir(wmtp_cache):
    from weighted_mtp.models.micro import ensure_micro_model

    return ensure_micro_model()


@pytest.fixture(scope="session")
def tiny_lm_model_dir(tmp_path_factory, micro_model_dir):
    """A 2-layer Llama with the micro tokenizer, for multi-process and fault tests."""
    from tiny_runs import tiny_lm_dir

    return tiny_lm_dir(tmp_path_factory.mktemp("tiny"), micro_model_dir)


def tiny_training_overrides(**extra) -> list[str]:
    """A 10-step baseline on the micro model: small batches, short sequences, no MLflow."""
    values = {
        "models.policy.path": "embedded:micro-llama",  # the shipped code arms' base takes minutes to build
        "training.max_steps": 10,
        "training.batch_size": 4,
        "training.learning_rate": 3e-3,
        "training.lr_scheduler.warmup_ratio": 0.0,
        "training.mixed_precision": "fp32",
        "training.log_interval": 1,
        "training.eval_every": 0.5,
        "data_sampling.n_samples": 40,
        "data_sampling.val_n_samples": 8,
        "data_sampling.pairwise.n_pairs": 40,  # the policy arms' configs read pairs
        "data_sampling.pairwise.val_n_pairs": 8,
        "dataset.max_length": 192,
        "checkpoint.save_checkpoint_every": 0.5,
        "checkpoint.save_total_limit": 3,
        "mlflow.enabled": False,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]
