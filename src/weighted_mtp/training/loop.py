"""The one training loop. Every method is an objective (loss + metrics) run by this loop;
nothing here knows which method it runs.

Per optimizer step: `gradient_accumulation_steps` micro-batches (forward, finite check,
backward), clipping, AdamW, schedule. Periodic validation and checkpoints at fractions of an
epoch, `--resume` that restores the exact position (model, optimizer, scheduler, data position,
RNG), and an HF-loadable export of the final model in `<run dir>/final/`.

The same loop runs data parallel under torchrun (`training/distributed.py`): each process trains
on its share of every global batch, losses are combined so a step equals one process's step on
the global batch, metrics are combined before rank 0 logs them, and checkpoints add sharded
(DCP) training state. SIGTERM finishes the current step, saves a checkpoint and returns
(`TrainResult.stopped_by`); the CLI then exits with status 0."""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from weighted_mtp.config import Config, config_to_dict
from weighted_mtp.errors import ConfigError, TrainingError, WMTPError
from weighted_mtp.files import building_dir
from weighted_mtp.log import get_logger
from weighted_mtp.models.compile import compile_blocks
from weighted_mtp.models.load import load_tokenizer
from weighted_mtp.objectives import OBJECTIVES
from weighted_mtp.training import checkpoint as ckpt
from weighted_mtp.training import distributed
from weighted_mtp.training.data_feed import BatchFeed, Split, load_split, problem_ids
from weighted_mtp.training.optim import build_optimizer, build_scheduler
from weighted_mtp.training.resources import peak_memory_mb
from weighted_mtp.training.signals import StopRequest
from weighted_mtp.training.tracking import MetricLogger, NullLogger
from weighted_mtp.training.validation import run_validation

log = get_logger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_dir: Path | None
    last_train: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    peak_memory_mb: float = 0.0
    tracking_uri: str = ""
    best_checkpoint: Path | None = None
    # Set when a stop signal (SIGTERM) ended the run early: its name and the checkpoint it saved.
    stopped_by: str | None = None
    stop_checkpoint: Path | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _every(fraction: float, steps_per_epoch: int) -> int:
    return 0 if fraction <= 0 else max(1, round(fraction * steps_per_epoch))


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _autocast(cfg: Config, device: torch.device):
    if cfg.training.mixed_precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False, show_progress: bool = True) -> TrainResult:
    """One process: the model on one device. Under torchrun (several processes), data parallel
    with `distributed.strategy` (see `training/distributed.py`); rank 0 logs and writes."""
    dctx = distributed.setup(cfg)
    try:
        return _train(cfg, Path(run_dir), resume, show_progress, dctx)
    finally:
        distributed.teardown(dctx)


def _train(cfg: Config, run_dir: Path, resume: bool, show_progress: bool, dctx: distributed.DistContext) -> TrainResult:
    t, c = cfg.training, cfg.checkpoint
    world = dctx.world_size
    if dctx.enabled and t.batch_size % world:
        raise ConfigError(f"config key 'training.batch_size': {t.batch_size} is not divisible by the {world} "
                          f"processes (each trains on batch_size / {world} rows of every global batch)")
    run_dir = Path(dctx.broadcast_object(str(run_dir)))  # every process writes where rank 0 does
    main = dctx.is_main
    hf_logging.disable_progress_bar()  # one progress bar (ours) per run
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    device = distributed.device_for(dctx, cfg.runtime.device)
    _seed_everything(cfg.runtime.seed)

    decision = None
    if main:  # one process looks at the run directory; all act on what it saw
        found, error = ckpt.latest_checkpoint(run_dir) if resume else None, None
        if resume and found is None:
            error = f"--resume {run_dir}: no complete checkpoint under {run_dir / ckpt.CHECKPOINT_DIR}"
        if not resume and ckpt.list_checkpoints(run_dir):
            error = f"{run_dir} already holds checkpoints; pass --resume {run_dir} or choose another --output-dir"
        decision = (str(found) if found else None, error)
    found, error = dctx.broadcast_object(decision)
    if error:
        raise WMTPError(error)
    resume_from = Path(found) if found else None

    objective = OBJECTIVES[cfg.experiment.stage](cfg)
    pairwise, val_pairwise = objective.batch_kind == "pairwise", objective.val_batch_kind == "pairwise"
    with dctx.main_first():  # rank 0 fills the caches (datasets, indexes, the micro model) first
        # Data first: a malformed file fails in seconds, before any model is loaded.
        if objective.own_data:  # an objective with its own data format (CLaRa's JSONL)
            train_split, val_split = _own_splits(objective, cfg)
            train_eval_items, overlap = None, 0
        else:
            first_span = min(1.0, 1.0 / max(1.0, t.n_epochs))
            train_split = load_split(cfg, "train", pairwise, progress_end=first_span)
            val_split = load_split(cfg, "validation", val_pairwise) if cfg.data_sampling.val_n_samples > 0 else None
            train_eval_items = _train_eval_items(cfg, train_split, pairwise, val_pairwise)
            overlap = len(problem_ids(train_split.items) & problem_ids(val_split.items)) if val_split else 0
        if resume_from is None:
            model, tokenizer, model_path = objective.build_model()
        else:
            model_path = resume_from / ckpt.MODEL_SUBDIR
            model, tokenizer = objective.load_model(model_path), load_tokenizer(model_path)
    model.to(device)
    objective.to(device)  # models the objective holds besides the trained one (a critic, a reference)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be usable
    dctx.barrier()
    collate, val_collate = objective.make_collator(tokenizer, "train"), objective.make_collator(tokenizer, "validation")
    feed = BatchFeed(cfg, train_split, t.batch_size, pairwise, t.n_epochs)  # global batches

    steps_per_epoch = max(1, math.ceil(feed.batches_per_epoch / t.gradient_accumulation_steps))
    total_steps = t.max_steps or max(1, math.ceil(t.n_epochs * steps_per_epoch))
    eval_every = _every(t.eval_every, steps_per_epoch)
    save_every = _every(c.save_checkpoint_every, steps_per_epoch)
    eval_batch_size = max(1, (t.eval_batch_size or t.batch_size) // world)

    engine = distributed.build_engine(model, cfg, dctx, device)  # DDP / FSDP2; the model itself alone
    if t.compile:
        # In place, so names and checkpoints are unchanged; math attention on CPU (models/compile.py).
        compile_blocks(model, math_attention=device.type == "cpu", device_type=device.type)
    view = engine.view  # what the objective calls
    extra = objective.extra_parameters()
    optimizer = build_optimizer(engine.module, t, extra)
    trained = [p for group in optimizer.param_groups for p in group["params"]]  # clipped together
    scheduler = build_scheduler(optimizer, t, total_steps)
    bundle = engine.state_module(extra)  # names for the optimizer state of sharded checkpoints
    step, best, own_rng = 0, None, False
    if resume_from is not None:
        state = ckpt.load_trainer_state(resume_from)
        if ckpt.is_sharded(state):
            distributed.load_sharded(bundle, optimizer, resume_from / ckpt.DCP_SUBDIR)
            own = ckpt.load_rank_state(resume_from, dctx.rank)
            objective_state, rng_state, own_rng = own["objective"], own["rng"], own.get("rank") == dctx.rank
        else:
            distributed.load_full_optimizer_state(engine, bundle, optimizer, state["optimizer"])
            objective_state, rng_state, own_rng = state["objective"], state["rng"], dctx.rank == 0
        scheduler.load_state_dict(state["scheduler"])
        feed.load_state_dict(state["feed"])
        objective.load_state_dict(objective_state)
        step, best = state["step"], state["best"]
        _set_rng_state(rng_state)
    if dctx.rank > 0 and not own_rng:  # dropout masks differ between processes (the model is built)
        torch.manual_seed(cfg.runtime.seed + 7919 * dctx.rank + step)

    if main:
        (run_dir / "config.yaml").write_text(_dump_yaml(config_to_dict(cfg)))
        logger = MetricLogger(run_dir, mlflow_enabled=cfg.mlflow.enabled, tracking_uri=cfg.mlflow.tracking_uri,
                              experiment=cfg.mlflow.experiment, run_name=cfg.experiment.name,
                              params=config_to_dict(cfg), resume=resume_from is not None,
                              tags={"stage": cfg.experiment.stage, **{tag: "true" for tag in cfg.experiment.tags}})
    else:
        logger = NullLogger()
    log.info(f"run directory: {run_dir}")
    log.info(f"model: {type(model).__name__} from {model_path} ({n_params / 1e6:.2f}M parameters, "
             f"{n_trainable / 1e6:.2f}M trainable) on {device}")
    if dctx.enabled:
        log.info(distributed.describe(dctx, engine.strategy, cfg)
                 + f"; {t.batch_size // world} of every {t.batch_size} rows per process")
    log.info(f"data: {len(train_split.items)} train items from {train_split.path}"
             + (f", {len(val_split.items)} validation items" if val_split else "")
             + f"; {total_steps} optimizer steps" + (f", resuming at step {step}" if resume_from else ""))
    if val_split is not None:
        log.info(f"validation problems also in training: {overlap}")
    if resume_from is None:
        logger.log(0, {"data/train_items": len(train_split.items), "data/problem_overlap": overlap,
                       "data/val_items": len(val_split.items) if val_split else 0})

    def save(at_step: int) -> Path:
        shared = {"step": at_step, "best": best, "scheduler": scheduler.state_dict(), "feed": feed.state_dict()}
        own_state = {"objective": objective.state_dict(), "rng": _rng_state(), "rank": dctx.rank}
        if not dctx.enabled:
            return ckpt.save_checkpoint(run_dir, at_step, model, tokenizer,
                                        {**shared, "optimizer": optimizer.state_dict(), **own_state})

        def write_model(path: Path) -> None:
            exportable = engine.exportable()  # a collective under FSDP2
            if main:
                ckpt.save_model(exportable, tokenizer, path)

        return ckpt.save_checkpoint_sharded(
            run_dir, at_step, dctx, write_model=write_model,
            write_shards=lambda path: distributed.save_sharded(bundle, optimizer, path),
            trainer_state={**shared, **own_state}, rank_state=own_state)

    result = TrainResult(run_dir=run_dir, steps=step, final_dir=None, tracking_uri=logger.tracking_uri)
    units_kind = distributed.loss_units(objective)
    accumulation = t.gradient_accumulation_steps
    interval: dict[str, list[torch.Tensor]] = {}
    records: list[tuple[dict[str, torch.Tensor], float]] = []  # several processes: (metrics, loss units)
    interval_tokens, interval_start, n_truncated = 0, time.perf_counter(), 0
    run_tokens, run_time = 0, 0.0
    progress = tqdm(total=total_steps, initial=step, disable=not (show_progress and main), dynamic_ncols=True,
                    desc="train")
    status = "FAILED"
    try:
        with StopRequest() as stop:
            view.train()
            while step < total_steps:
                nonfinite: float | None = None
                for micro in range(accumulation):
                    global_items = feed.next_batch()
                    items = distributed.shard(global_items, dctx)
                    # A process whose share of a short last batch is empty runs a stand-in row
                    # with weight 0, so every process takes part in every collective.
                    batch = collate(items or global_items[:1])
                    truncated = batch.pop("n_truncated", 0)
                    # Counted on the host before the copy: no device sync per micro-batch.
                    tokens = sum(int(v.sum()) for k, v in batch.items() if k.endswith("attention_mask"))
                    if items:
                        n_truncated += truncated
                        interval_tokens += tokens
                    scale = 1.0
                    if dctx.enabled:
                        units = float(distributed.count_units(batch, units_kind)) if items else 0.0
                        total = dctx.all_reduce(torch.tensor([units], dtype=torch.float64)).item()
                        scale = world * units / total if total > 0 else 0.0
                    batch = _to_device(batch, device)
                    with engine.sync_context(micro == accumulation - 1):
                        with _autocast(cfg, device):
                            out = objective(view, batch, training=True)
                        if not torch.isfinite(out.loss):
                            if not dctx.enabled:
                                last = ckpt.latest_checkpoint(run_dir)
                                raise TrainingError(
                                    f"non-finite loss ({out.loss.item()}) at step {step + 1}; stopped without saving. "
                                    f"Last good checkpoint: {last if last else 'none'}"
                                )
                            nonfinite = out.loss.item()
                        loss = out.loss if scale == 1.0 else out.loss * scale
                        (loss / accumulation).backward()
                    if dctx.enabled:
                        records.append(({k: v.detach().float() for k, v in out.metrics.items()}, scale))
                    else:
                        for name, value in out.metrics.items():
                            interval.setdefault(name, []).append(value.detach().float())
                stop_now = False
                if dctx.enabled:  # one agreement per step: a bad loss anywhere, a stop request anywhere
                    flags = dctx.all_reduce(torch.tensor([float(nonfinite is not None), float(stop.requested)],
                                                         dtype=torch.float64), "max")
                    if flags[0] > 0:
                        last = ckpt.latest_checkpoint(run_dir)
                        where = nonfinite if nonfinite is not None else "on another process"
                        raise TrainingError(f"non-finite loss ({where}) at step {step + 1}; stopped without saving. "
                                            f"Last good checkpoint: {last if last else 'none'}")
                    stop_now = bool(flags[1] > 0)
                    engine.sync_unwrapped_grads(trained)
                grad_norm = engine.clip_grad_norm(trained, t.max_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                stop_now = stop_now or (not dctx.enabled and stop.requested)
                interval.setdefault("grad_norm", []).append(grad_norm.detach().float())
                progress.update(1)

                if step % t.log_interval == 0 or step == total_steps:
                    elapsed = time.perf_counter() - interval_start
                    train_metrics = {f"train/{k}": torch.stack(v).nanmean().item() for k, v in interval.items()}
                    if dctx.enabled:  # weighted like the losses: what one process on the global batch reports
                        local = [({k: v.item() for k, v in m.items()}, u) for m, u in records]
                        for name, values in distributed.combine_interval(dctx, local).items():
                            train_metrics[f"train/{name}"] = torch.tensor(values, dtype=torch.float64).nanmean().item()
                        counts = dctx.all_reduce(torch.tensor([interval_tokens, n_truncated], dtype=torch.float64))
                        interval_tokens, n_truncated = int(counts[0]), int(counts[1])
                    run_tokens, run_time = run_tokens + interval_tokens, run_time + elapsed
                    train_metrics.update({"train/lr": lr, "train/tokens_per_s": interval_tokens / max(elapsed, 1e-9),
                                          "train/n_truncated": float(n_truncated),
                                          "train/epoch": step / steps_per_epoch,
                                          "train/peak_memory_mb": peak_memory_mb(device)})
                    logger.log(step, train_metrics)
                    result.last_train = train_metrics
                    progress.set_postfix(loss=f"{train_metrics.get('train/loss', float('nan')):.3f}",
                                         tok_s=f"{train_metrics['train/tokens_per_s']:.0f}")
                    interval, records, interval_tokens, n_truncated = {}, [], 0, 0
                    interval_start = time.perf_counter()

                is_last, new_best = step == total_steps, False
                if val_split is not None and ((eval_every and step % eval_every == 0) or is_last):
                    pause = time.perf_counter()
                    val = run_validation(view, objective, val_split.items, train_eval_items, val_collate,
                                         eval_batch_size, device, lambda: _autocast(cfg, device), dctx)
                    logger.log(step, val)
                    result.last_val = val
                    metric = val.get(c.best_metric)
                    if metric is not None and math.isfinite(metric) and (
                        best is None or (metric < best["value"] if c.best_mode == "min" else metric > best["value"])
                    ):
                        best, new_best = {"value": metric, "step": step}, True
                    interval_start += time.perf_counter() - pause  # validation time is not training throughput
                stop_now = stop_now and not is_last  # the last step finishes the run as usual
                if ((save_every and step % save_every == 0) or (is_last and c.save_final)
                        or (new_best and c.save_best) or stop_now):
                    saved = save(step)
                    if main:
                        if c.save_best and new_best:
                            ckpt.mark_best(run_dir, saved)
                        ckpt.rotate_checkpoints(run_dir, c.save_total_limit)
                if stop_now:
                    result.stopped_by, result.stop_checkpoint = stop.signal_name or "a signal on another process", saved
                    break
        if c.save_final and result.stopped_by is None:
            exportable = engine.exportable()  # a collective under FSDP2
            if main:
                _export_final(run_dir, exportable, tokenizer)
            dctx.barrier()
            result.final_dir = run_dir / "final"
        status = "FINISHED" if result.stopped_by is None else "KILLED"
    finally:
        progress.close()
        logger.close(status)
    result.steps = step
    result.tokens_per_s = run_tokens / run_time if run_time > 0 else 0.0
    result.peak_memory_mb = peak_memory_mb(device)
    result.best_checkpoint = ckpt.best_checkpoint(run_dir)
    if result.stopped_by is not None:
        log.info(f"stopped by {result.stopped_by} after step {step} of {total_steps}; checkpoint saved to "
                 f"{result.stop_checkpoint}; continue with: wmtp train --resume {run_dir}")
    log.info(f"run directory: {run_dir}")
    return result


def _own_splits(objective, cfg: Config):
    """Splits of an objective that reads its own files: `load_items(which)` gives (path, items);
    the loop only shuffles and batches them (`data_sampling.n_samples` / `val_n_samples` cap them)."""
    path, items = objective.load_items("train")
    train_split = Split(path=path, items=items[: cfg.data_sampling.n_samples], stats=None)
    val_split = None
    if cfg.data_sampling.val_n_samples > 0:
        path, items = objective.load_items("validation")
        val_split = Split(path=path, items=items[: cfg.data_sampling.val_n_samples], stats=None)
    return train_split, val_split


def _train_eval_items(cfg: Config, train_split, pairwise: bool, val_pairwise: bool) -> list | None:
    """Training items evaluated like validation: the first trained items when both use the
    same batch kind, else pairs drawn from the training file (problems the model trained on)."""
    n = cfg.data_sampling.train_eval_n_samples
    if n <= 0:
        return None
    if pairwise == val_pairwise:
        return train_split.items[:n]
    return load_split(cfg, "train", val_pairwise, n=n, seed_offset=1).items


def _export_final(run_dir: Path, model, tokenizer) -> Path:
    """`final/` is replaced only once the new export is complete."""
    final = run_dir / "final"
    with building_dir(final) as tmp:
        ckpt.save_model(model, tokenizer, tmp)
    return final


def _dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
