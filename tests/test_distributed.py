"""Data parallel training on 2 CPU processes (torchrun, gloo) against one process on the same
global batches: DDP and FSDP2 log the same losses and end with the same parameters on both
ranks; a sharded (DCP) checkpoint written by 2 processes resumes in 1.

The runs are tiny (a 2-layer, hidden-64 Llama with the micro model's tokenizer, 3 optimizer
steps of 2 accumulation micro-batches) and chosen to hit the awkward cases: a last global batch
of one row (one rank trains on a stand-in row with weight 0) and a validation split that does
not divide evenly (one rank runs a stand-in validation batch)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from tiny_runs import child_env, in_process_train, logged
from weighted_mtp.config import load_config
from weighted_mtp.errors import ConfigError
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.training import checkpoint as ckpt
from weighted_mtp.training import distributed
from weighted_mtp.training.loop import train

BASELINE = REPO / "configs" / "baseline" / "baseline.yaml"
WORKER = REPO / "tests" / "distributed_worker.py"
STEPS = 3


def tiny_overrides(tiny_lm_model_dir, **extra) -> list[str]:
    values = {
        "models.policy.path": str(tiny_lm_model_dir),
        "models.policy.n_future_tokens": 2,
        "training.max_steps": STEPS,
        "training.batch_size": 4,
        "training.gradient_accumulation_steps": 2,
        "training.learning_rate": 3e-3,
        "training.lr_scheduler.warmup_ratio": 0.0,
        "training.mixed_precision": "fp32",
        "training.log_interval": 1,
        "training.eval_every": 0.5,
        "data_sampling.policy_data": "rows",  # infrastructure, not an arm: the row counts below
        "data_sampling.n_samples": 13,  # batches of 4, 4, 4, 1: the last one leaves rank 1 without a row
        "data_sampling.val_n_samples": 5,  # 3 + 2 rows per rank: rank 1 runs one stand-in batch
        "dataset.max_length": 128,
        "checkpoint.save_checkpoint_every": 0.5,
        "checkpoint.save_total_limit": 5,
        "mlflow.enabled": False,
        "runtime.num_threads": 1,  # 2 shared cores: oversubscribed threads make everything slower
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def torchrun_worker(run_dir, out_dir, overrides, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), str(BASELINE), str(run_dir), str(out_dir), *overrides]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [torch.load(out_dir / f"rank_{r}.pt", weights_only=False) for r in range(nproc)], proc.stdout


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_lm_model_dir):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    return run_dir, in_process_train(load_config(BASELINE, tiny_overrides(tiny_lm_model_dir)), run_dir)


@pytest.fixture(scope="module", params=["ddp", "fsdp2"])
def two_procs(request, tmp_path_factory, tiny_lm_model_dir):
    root = tmp_path_factory.mktemp(request.param)
    ranks, stdout = torchrun_worker(root / "run", root / "dump",
                                    tiny_overrides(tiny_lm_model_dir, **{"distributed.strategy": request.param}))
    assert f"distributed: {request.param} over 2 processes (gloo)" in stdout
    return request.param, root / "run", ranks


def test_two_processes_match_one_process_on_the_global_batch(single, two_procs):
    strategy, run_dir, ranks = two_procs
    single_dir, _ = single
    ref_train, got_train = logged(single_dir, "train/loss"), logged(run_dir, "train/loss")
    assert sorted(got_train) == list(range(1, STEPS + 1))
    train_diffs = [abs(got_train[step]["train/loss"] - v["train/loss"]) for step, v in ref_train.items()]
    ref_val, got_val = logged(single_dir, "val/"), logged(run_dir, "val/")
    assert sorted(got_val) == sorted(ref_val) and ref_val
    val_diffs = [abs(got_val[step][name] - value) for step, values in ref_val.items() for name, value in values.items()]
    print(f"{strategy}: max |train/loss diff| {max(train_diffs):.2e}, max |val/* diff| {max(val_diffs):.2e}")
    assert max(train_diffs) < 1e-4 and max(val_diffs) < 1e-4

    # Every rank holds the same model (gathered from the shards under FSDP2) ...
    a, b = ranks[0]["params"], ranks[1]["params"]
    assert a.keys() == b.keys()
    for name in a:
        if strategy == "ddp":
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    # ... the one rank 0 exported, which is the one-process model up to float rounding.
    final = dict(MTPModel.from_pretrained(run_dir / "final").named_parameters())
    reference = dict(MTPModel.from_pretrained(single_dir / "final").named_parameters())
    for name, value in a.items():
        assert torch.equal(final[name].detach(), value), name
        torch.testing.assert_close(value, reference[name].detach(), rtol=0, atol=1e-4, msg=name)
    print(f"{strategy}: max |parameter diff| vs one process after {STEPS} steps: "
          f"{max((a[n] - reference[n].detach()).abs().max().item() for n in a):.2e}")


def test_whitening_statistics_are_global_batch_statistics(two_procs):
    _, _, ranks = two_procs
    xs = torch.cat([r["whiten"]["x"][r["whiten"]["mask"]] for r in ranks]).double()
    expected = (xs.sum().item(), (xs * xs).sum().item(), float(xs.numel()))
    for r in ranks:
        assert r["whiten"]["sums"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("two_procs", ["fsdp2"], indirect=True)  # DDP writes the same DCP format
def test_sharded_checkpoint_from_two_processes_resumes_in_one(two_procs, tmp_path):
    _, run_dir, _ = two_procs
    step1 = run_dir / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(1)
    state = ckpt.load_trainer_state(step1)
    assert state["format"] == "dcp" and state["world_size"] == 2 and "optimizer" not in state
    assert (step1 / ckpt.DCP_SUBDIR / ".metadata").is_file()
    assert sorted(p.name for p in (step1 / ckpt.RANK_STATES_SUBDIR).iterdir()) == ["rank_0.pt", "rank_1.pt"]
    MTPModel.from_pretrained(step1 / ckpt.MODEL_SUBDIR)  # the HF-loadable part, as with one process

    resumed = tmp_path / "resumed"
    shutil.copytree(step1, resumed / ckpt.CHECKPOINT_DIR / step1.name)
    result = in_process_train(load_config(run_dir / "config.yaml"), resumed, resume=True)
    assert result.steps == STEPS
    a = dict(MTPModel.from_pretrained(run_dir / "final").named_parameters())
    b = dict(MTPModel.from_pretrained(resumed / "final").named_parameters())
    for name in a:  # one process continues the two-process run (same global batches, same optimizer state)
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
    assert logged(resumed, "train/loss")[STEPS]["train/loss"] == pytest.approx(
        logged(run_dir, "train/loss")[STEPS]["train/loss"], abs=1e-4)


# ---- no process group needed -------------------------------------------------------------------


def test_batch_size_must_divide_among_processes(monkeypatch, tiny_lm_model_dir, tmp_path):
    monkeypatch.setattr(distributed, "setup", lambda cfg: distributed.DistContext(world_size=2, rank=0))
    cfg = load_config(BASELINE, tiny_overrides(tiny_lm_model_dir, **{"training.batch_size": 3}))
    with pytest.raises(ConfigError, match="training.batch_size.*not divisible by the 2 processes"):
        train(cfg, tmp_path / "run", show_progress=False)


def test_shares_are_strided_and_disjoint():
    items = list(range(7))
    shares = [distributed.shard(items, distributed.DistContext(world_size=3, rank=r)) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert distributed.shard(items, distributed.DistContext()) == items


def test_rank_metrics_combine_weighted_by_loss_units():
    ctx = distributed.DistContext()  # one rank: the combination is the identity, nan-aware
    combined = distributed.combine_interval(ctx, [({"loss": 2.0, "ce": float("nan")}, 3.0), ({"loss": 4.0}, 1.0)])
    assert combined["loss"] == [2.0, 4.0]
    assert combined["ce"][0] != combined["ce"][0]  # nan stays nan


def test_wmtp_train_nproc_relaunches_through_torchrun(monkeypatch, tmp_path):
    from weighted_mtp.cli import main

    seen = {}

    class FakePopen:
        def __init__(self, cmd, env):
            seen["cmd"], seen["env"] = cmd, env

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rc = main(["train", str(BASELINE), "--nproc", "2", "--output-dir", str(tmp_path / "run"),
               "--override", "distributed.strategy=fsdp2"])
    assert rc == 0
    cmd = seen["cmd"]
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:] == ["-m", "weighted_mtp", "train", str(BASELINE), "--output-dir", str(tmp_path / "run"),
                       "--override", "distributed.strategy=fsdp2"]
