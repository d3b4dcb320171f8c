"""Faults, on real `python -m weighted_mtp train` processes:
- SIGTERM: the run finishes its step, saves a checkpoint, says where, exits 0; resuming it ends
  exactly where an uninterrupted run ends;
- SIGKILL at a random step after the first checkpoint: `--resume` ends with parameters
  torch.equal to the uninterrupted run;
- SIGKILL in the middle of a checkpoint write (made slow by the WMTP_TEST_SLOW_CHECKPOINT hook, so
  the kill lands mid-write every time): the previous checkpoint is intact, still `latest`, and
  loadable.
Runs are tiny (8 steps of a 2-block Llama) and use one thread, so the killed process and the
in-process resume compute bit-identically."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from tiny_runs import child_env, in_process_train, logged
from weighted_mtp.config import load_config
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.training import checkpoint as ckpt

BASELINE = REPO / "configs" / "baseline" / "baseline.yaml"
STEPS = 8  # 4 batches per epoch, a checkpoint every 2 steps


def fault_overrides(tiny_lm_model_dir) -> list[str]:
    values = {
        "models.policy.path": str(tiny_lm_model_dir),
        "models.policy.n_future_tokens": 2,
        "training.max_steps": STEPS,
        "training.batch_size": 4,
        "training.learning_rate": 3e-3,
        "training.lr_scheduler.warmup_ratio": 0.0,
        "training.mixed_precision": "fp32",
        "training.log_interval": 1,
        "data_sampling.policy_data": "rows",  # infrastructure, not an arm: 16 rows, 4 batches an epoch
        "data_sampling.n_samples": 16,
        "data_sampling.val_n_samples": 0,
        "dataset.max_length": 128,
        "checkpoint.save_checkpoint_every": 0.5,
        "checkpoint.save_total_limit": 10,
        "mlflow.enabled": False,
        "runtime.num_threads": 1,
    }
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_lm_model_dir):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    in_process_train(load_config(BASELINE, fault_overrides(tiny_lm_model_dir)), run_dir)
    return dict(MTPModel.from_pretrained(run_dir / "final").named_parameters())


def start(run_dir, tiny_lm_model_dir, **env) -> subprocess.Popen:
    overrides = [a for o in fault_overrides(tiny_lm_model_dir) for a in ("--override", o)]
    cmd = [sys.executable, "-m", "weighted_mtp", "train", str(BASELINE), "--output-dir", str(run_dir), *overrides]
    return subprocess.Popen(cmd, env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until(proc: subprocess.Popen, condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def last_step(run_dir) -> int:
    steps = logged(run_dir, "train/loss")
    return max(steps) if steps else 0


def tmp_dirs(run_dir, step: int) -> list:
    root = run_dir / ckpt.CHECKPOINT_DIR
    return list(root.glob(ckpt.checkpoint_name(step) + ".tmp-*")) if root.is_dir() else []


def resume_and_compare(run_dir, uninterrupted) -> None:
    result = in_process_train(load_config(run_dir / "config.yaml"), run_dir, resume=True)
    assert result.steps == STEPS
    final = dict(MTPModel.from_pretrained(run_dir / "final").named_parameters())
    assert final.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(final[name], value), name


def test_sigterm_finishes_the_step_saves_and_exits_cleanly(tmp_path, tiny_lm_model_dir, uninterrupted):
    run_dir = tmp_path / "run"
    # The step-2 checkpoint write pauses 3 s: SIGTERM arrives during it, so the run stops at the
    # end of step 3 every time, however fast or slow this machine is.
    proc = start(run_dir, tiny_lm_model_dir, WMTP_TEST_SLOW_CHECKPOINT="2:3")
    wait_until(proc, lambda: tmp_dirs(run_dir, 2), "the step-2 checkpoint write")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    stop_dir = run_dir / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(3)
    assert f"stopped by SIGTERM after step 3 of {STEPS}; checkpoint saved to {stop_dir}" in out
    assert ckpt.latest_checkpoint(run_dir) == stop_dir
    assert not (run_dir / "final").exists() and last_step(run_dir) == 3
    resume_and_compare(run_dir, uninterrupted)


def test_sigkill_at_a_random_step_then_resume_equals_uninterrupted(tmp_path, tiny_lm_model_dir, uninterrupted):
    run_dir = tmp_path / "run"
    kill_at = random.Random().randint(3, 6)  # after the first checkpoint (step 2)
    print(f"SIGKILL once step {kill_at} is logged")
    # The step-6 checkpoint write pauses: the run cannot finish before the kill lands.
    proc = start(run_dir, tiny_lm_model_dir, WMTP_TEST_SLOW_CHECKPOINT="6:60")
    wait_until(proc, lambda: last_step(run_dir) >= kill_at and ckpt.latest_checkpoint(run_dir) is not None,
               f"step {kill_at}")
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "final").exists()
    resume_and_compare(run_dir, uninterrupted)


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, tiny_lm_model_dir, uninterrupted):
    run_dir = tmp_path / "run"
    proc = start(run_dir, tiny_lm_model_dir, WMTP_TEST_SLOW_CHECKPOINT="4:60")
    wait_until(proc, lambda: tmp_dirs(run_dir, 4), "the step-4 checkpoint write")
    time.sleep(0.2)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    previous = run_dir / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(2)
    assert tmp_dirs(run_dir, 4)  # the half-written one is still there, under its temporary name
    assert ckpt.latest_checkpoint(run_dir) == previous
    assert (run_dir / ckpt.CHECKPOINT_DIR / "latest").read_text().strip() == previous.name
    assert ckpt.load_trainer_state(previous)["step"] == 2
    MTPModel.from_pretrained(previous / ckpt.MODEL_SUBDIR)
    resume_and_compare(run_dir, uninterrupted)
    assert not tmp_dirs(run_dir, 4)  # the resumed run's rotation swept the leftover away
