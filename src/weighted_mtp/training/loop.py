"""The one training loop. Every method is an objective (loss + metrics) run by this loop;
nothing here knows which method it runs.

Per optimizer step: `gradient_accumulation_steps` micro-batches (forward, finite check,
backward), clipping, AdamW, schedule. Periodic validation and checkpoints at fractions of an
epoch, `--resume` that restores the exact position (model, optimizer, scheduler, data position,
RNG), and an HF-loadable export of the final model in `<run dir>/final/`.

The same loop runs data parallel under torchrun (`training/distributed.py`): each process trains
on its share of every global batch, losses are combined so a step equals one process's step on
the global batch, metrics are combined before rank 0 logs them, and checkpoints add sharded
(DCP) training state. One process is the same path with a distributed context that does nothing.
SIGTERM finishes the current step, saves a checkpoint and returns (`TrainResult.stopped_by`); the
CLI then exits with status 0.

`_train` reads as the recipe: `_setup` (run directory, objective, data, model, optimizer, resumed
state, logger), then per step `_train_step`, `_log_interval`, `_validate` and `_save`, then the
final export."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from weighted_mtp.training.data_feed import BatchFeed, Split
from weighted_mtp.training.optim import build_optimizer, build_scheduler
from weighted_mtp.training.resources import peak_memory_mb
from weighted_mtp.training.rng import rng_state, seed_everything, set_rng_state
from weighted_mtp.training.run_data import load_run_data
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


@dataclass
class _Run:
    """What one run holds between steps (built by `_setup`, advanced by the step functions)."""

    cfg: Config
    dctx: distributed.DistContext
    run_dir: Path
    device: torch.device
    objective: Any
    model: torch.nn.Module
    tokenizer: Any
    engine: distributed.Engine
    optimizer: torch.optim.Optimizer
    scheduler: Any
    trained: list  # every optimized parameter, clipped together
    bundle: torch.nn.Module  # names for the optimizer state of sharded checkpoints
    feed: BatchFeed
    collate: Any
    val_collate: Any
    val_split: Split | None
    train_eval_items: list | None
    total_steps: int
    steps_per_epoch: int
    logger: Any
    result: TrainResult
    step: int = 0
    best: dict | None = None
    lr: float = 0.0  # of the last step, before the scheduler moved it
    # The current logging interval: per micro-batch (metrics, loss units) and per-step values.
    records: list = field(default_factory=list)
    interval: dict = field(default_factory=dict)
    interval_tokens: int = 0
    n_truncated: int = 0
    interval_start: float = field(default_factory=time.perf_counter)
    run_tokens: int = 0
    run_time: float = 0.0

    @property
    def view(self):  # what the objective calls
        return self.engine.view


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
    run = _setup(cfg, run_dir, resume, dctx)
    t, c = cfg.training, cfg.checkpoint
    eval_every = _every(t.eval_every, run.steps_per_epoch)
    save_every = _every(c.save_checkpoint_every, run.steps_per_epoch)
    progress = tqdm(total=run.total_steps, initial=run.step, disable=not (show_progress and dctx.is_main),
                    dynamic_ncols=True, desc="train")
    status = "FAILED"
    try:
        with StopRequest() as stop:
            run.view.train()
            while run.step < run.total_steps:
                stop_now = _train_step(run, stop)
                progress.update(1)
                is_last = run.step == run.total_steps
                if run.step % t.log_interval == 0 or is_last:
                    _log_interval(run, progress)
                new_best = False
                if run.val_split is not None and ((eval_every and run.step % eval_every == 0) or is_last):
                    new_best = _validate(run)
                stop_now = stop_now and not is_last  # the last step finishes the run as usual
                if ((save_every and run.step % save_every == 0) or (is_last and c.save_final)
                        or (new_best and c.save_best) or stop_now):
                    saved = _save(run, new_best)
                if stop_now:
                    run.result.stopped_by = stop.signal_name or "a signal on another process"
                    run.result.stop_checkpoint = saved
                    break
        if c.save_final and run.result.stopped_by is None:
            exportable = run.engine.exportable()  # a collective under FSDP2
            if dctx.is_main:
                _export_final(run.run_dir, exportable, run.tokenizer)
            dctx.barrier()
            run.result.final_dir = run.run_dir / "final"
        status = "FINISHED" if run.result.stopped_by is None else "KILLED"
    finally:
        progress.close()
        run.logger.close(status)
    return _finish(run)


# ---- setup ---------------------------------------------------------------------------------------


def _setup(cfg: Config, run_dir: Path, resume: bool, dctx: distributed.DistContext) -> _Run:
    """Everything a run needs before its first step, in an order that fails fast: the run
    directory's state, then data (a malformed file fails in seconds), then the model."""
    t = cfg.training
    world = dctx.world_size
    if t.batch_size % world:
        raise ConfigError(f"config key 'training.batch_size': {t.batch_size} is not divisible by the {world} "
                          f"processes (each trains on batch_size / {world} rows of every global batch)")
    run_dir = Path(dctx.broadcast_object(str(run_dir)))  # every process writes where rank 0 does
    hf_logging.disable_progress_bar()  # one progress bar (ours) per run
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    device = distributed.device_for(dctx, cfg.runtime.device)
    seed_everything(cfg.runtime.seed)
    resume_from = _resume_point(run_dir, resume, dctx)

    objective = OBJECTIVES[cfg.experiment.stage](cfg)
    with dctx.main_first():  # rank 0 fills the caches (datasets, indexes, the micro model) first
        train_split, val_split, train_eval_items, overlap = load_run_data(objective, cfg)
        if resume_from is None:
            model, tokenizer, model_path = objective.build_model()
        else:
            model_path = resume_from / ckpt.MODEL_SUBDIR
            model, tokenizer = objective.load_model(model_path), load_tokenizer(model_path)
    model.to(device)
    objective.to(device)  # models the objective holds besides the trained one (a critic, a reference)
    sizes = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad))
    if dctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be usable
    dctx.barrier()
    collate, val_collate = objective.make_collator(tokenizer, "train"), objective.make_collator(tokenizer, "validation")
    feed = BatchFeed(cfg, train_split, t.batch_size, objective.batch_kind == "pairwise", t.n_epochs)  # global batches
    steps_per_epoch = max(1, math.ceil(feed.batches_per_epoch / t.gradient_accumulation_steps))
    total_steps = t.max_steps or max(1, math.ceil(t.n_epochs * steps_per_epoch))

    engine = distributed.build_engine(model, cfg, dctx, device)  # DDP / FSDP2; the model itself alone
    if t.compile:
        # In place, so names and checkpoints are unchanged; math attention on CPU (models/compile.py).
        compile_blocks(model, math_attention=device.type == "cpu", device_type=device.type)
    extra = objective.extra_parameters()
    optimizer = build_optimizer(engine.module, t, extra)
    run = _Run(cfg=cfg, dctx=dctx, run_dir=run_dir, device=device, objective=objective, model=model,
               tokenizer=tokenizer, engine=engine, optimizer=optimizer,
               scheduler=build_scheduler(optimizer, t, total_steps),
               trained=[p for group in optimizer.param_groups for p in group["params"]],
               bundle=engine.state_module(extra), feed=feed, collate=collate, val_collate=val_collate,
               val_split=val_split, train_eval_items=train_eval_items, total_steps=total_steps,
               steps_per_epoch=steps_per_epoch, logger=None, result=None)
    own_rng = _restore(run, resume_from) if resume_from is not None else False
    if dctx.rank > 0 and not own_rng:  # dropout masks differ between processes (the model is built)
        torch.manual_seed(cfg.runtime.seed + 7919 * dctx.rank + run.step)
    run.logger = _open_logger(run, resume_from)
    run.result = TrainResult(run_dir=run_dir, steps=run.step, final_dir=None, tracking_uri=run.logger.tracking_uri)
    _describe(run, model_path, sizes, train_split, resume_from, overlap)
    return run


def _resume_point(run_dir: Path, resume: bool, dctx: distributed.DistContext) -> Path | None:
    """The checkpoint to resume from (None: a fresh run). One process looks at the run
    directory; all act on what it saw."""
    decision = None
    if dctx.is_main:
        found, error = ckpt.latest_checkpoint(run_dir) if resume else None, None
        if resume and found is None:
            error = f"--resume {run_dir}: no complete checkpoint under {run_dir / ckpt.CHECKPOINT_DIR}"
        if not resume and ckpt.list_checkpoints(run_dir):
            error = f"{run_dir} already holds checkpoints; pass --resume {run_dir} or choose another --output-dir"
        decision = (str(found) if found else None, error)
    found, error = dctx.broadcast_object(decision)
    if error:
        raise WMTPError(error)
    return Path(found) if found else None


def _restore(run: _Run, resume_from: Path) -> bool:
    """Optimizer, scheduler, data position, objective state, step, best and RNG from a
    checkpoint; True when this process restored its own RNG state."""
    dctx = run.dctx
    state = ckpt.load_trainer_state(resume_from)
    if ckpt.is_sharded(state):
        distributed.load_sharded(run.bundle, run.optimizer, resume_from / ckpt.DCP_SUBDIR)
        own = ckpt.load_rank_state(resume_from, dctx.rank)
        objective_state, saved_rng, own_rng = own["objective"], own["rng"], own.get("rank") == dctx.rank
    else:
        distributed.load_full_optimizer_state(run.engine, run.bundle, run.optimizer, state["optimizer"])
        objective_state, saved_rng, own_rng = state["objective"], state["rng"], dctx.rank == 0
    run.scheduler.load_state_dict(state["scheduler"])
    run.feed.load_state_dict(state["feed"])
    run.objective.load_state_dict(objective_state)
    run.step, run.best = state["step"], state["best"]
    set_rng_state(saved_rng)
    return own_rng


def _open_logger(run: _Run, resume_from: Path | None):
    """Rank 0 logs (metrics.jsonl and MLflow) and writes the resolved config; the others log nothing."""
    cfg = run.cfg
    if not run.dctx.is_main:
        return NullLogger()
    (run.run_dir / "config.yaml").write_text(_dump_yaml(config_to_dict(cfg)))
    return MetricLogger(run.run_dir, mlflow_enabled=cfg.mlflow.enabled, tracking_uri=cfg.mlflow.tracking_uri,
                        experiment=cfg.mlflow.experiment, run_name=cfg.experiment.name,
                        params=config_to_dict(cfg), resume=resume_from is not None,
                        tags={"stage": cfg.experiment.stage, **{tag: "true" for tag in cfg.experiment.tags}})


def _describe(run: _Run, model_path: Path, sizes: tuple[int, int], train_split: Split, resume_from: Path | None,
              overlap: int) -> None:
    """What the run is about to do, in the log; the data counts also as metrics at step 0."""
    t, model, val_split = run.cfg.training, run.model, run.val_split
    n_params, n_trainable = sizes
    log.info(f"run directory: {run.run_dir}")
    log.info(f"model: {type(model).__name__} from {model_path} ({n_params / 1e6:.2f}M parameters, "
             f"{n_trainable / 1e6:.2f}M trainable) on {run.device}")
    if run.dctx.enabled:
        world = run.dctx.world_size
        log.info(distributed.describe(run.dctx, run.engine.strategy, run.cfg)
                 + f"; {t.batch_size // world} of every {t.batch_size} rows per process")
    log.info(f"data: {len(train_split.items)} train items from {train_split.path}"
             + (f", {len(val_split.items)} validation items" if val_split else "")
             + f"; {run.total_steps} optimizer steps" + (f", resuming at step {run.step}" if resume_from else ""))
    if val_split is not None:
        log.info(f"validation problems also in training: {overlap}")
    if resume_from is None:
        run.logger.log(0, {"data/train_items": len(train_split.items), "data/problem_overlap": overlap,
                           "data/val_items": len(val_split.items) if val_split else 0})


# ---- one optimizer step --------------------------------------------------------------------------


def _train_step(run: _Run, stop: StopRequest) -> bool:
    """`gradient_accumulation_steps` micro-batches, then one agreement over processes (a
    non-finite loss anywhere stops the run before the update; a stop request anywhere ends it
    after this step), clipping and the update. Returns whether to stop after this step. The
    losses are checked once per step, not per micro-batch: one host sync instead of one each."""
    cfg, dctx, t = run.cfg, run.dctx, run.cfg.training
    accumulation = t.gradient_accumulation_steps
    units_kind = distributed.loss_units(run.objective)
    losses = []
    for micro in range(accumulation):
        global_items = run.feed.next_batch()
        items = distributed.shard(global_items, dctx)
        # A process whose share of a short last batch is empty runs a stand-in row
        # with weight 0, so every process takes part in every collective.
        batch = run.collate(items or global_items[:1])
        truncated = batch.pop("n_truncated", 0)
        # Counted on the host before the copy: no device sync per micro-batch.
        tokens = sum(int(v.sum()) for k, v in batch.items() if k.endswith("attention_mask"))
        if items:
            run.n_truncated += truncated
            run.interval_tokens += tokens
        # This process's share of the global batch's loss units: a step equals one process's step
        # on the global batch (1.0 with one process).
        units = float(distributed.count_units(batch, units_kind)) if items else 0.0
        total = dctx.all_reduce(torch.tensor([units], dtype=torch.float64)).item()
        scale = dctx.world_size * units / total if total > 0 else 0.0
        batch = _to_device(batch, run.device)
        with run.engine.sync_context(micro == accumulation - 1):
            with _autocast(cfg, run.device):
                out = run.objective(run.view, batch, training=True)
            losses.append(out.loss.detach())
            loss = out.loss if scale == 1.0 else out.loss * scale
            (loss / accumulation).backward()
        run.records.append(({k: v.detach().float() for k, v in out.metrics.items()}, scale))
    losses = torch.stack(losses)
    finite = torch.isfinite(losses)
    flags = dctx.all_reduce(torch.tensor([float(not finite.all()), float(stop.requested)], dtype=torch.float64),
                            "max")
    if flags[0] > 0:
        last = ckpt.latest_checkpoint(run.run_dir)
        where = losses[~finite][0].item() if not finite.all() else "on another process"
        raise TrainingError(f"non-finite loss ({where}) at step {run.step + 1}; stopped without saving. "
                            f"Last good checkpoint: {last if last else 'none'}")
    run.engine.sync_unwrapped_grads(run.trained)
    grad_norm = run.engine.clip_grad_norm(run.trained, t.max_grad_norm)
    run.lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.interval.setdefault("grad_norm", []).append(grad_norm.detach().float())
    return bool(flags[1] > 0)


def _log_interval(run: _Run, progress) -> None:
    """The interval's metrics, combined over processes as the losses are (by loss units), logged
    by rank 0; then a new interval starts."""
    elapsed = time.perf_counter() - run.interval_start
    train_metrics = {f"train/{k}": torch.stack(v).nanmean().item() for k, v in run.interval.items()}
    local = [({k: v.item() for k, v in m.items()}, u) for m, u in run.records]
    for name, values in distributed.combine_interval(run.dctx, local).items():
        train_metrics[f"train/{name}"] = torch.tensor(values, dtype=torch.float64).nanmean().item()
    counts = run.dctx.all_reduce(torch.tensor([run.interval_tokens, run.n_truncated], dtype=torch.float64))
    interval_tokens, n_truncated = int(counts[0]), int(counts[1])
    run.run_tokens, run.run_time = run.run_tokens + interval_tokens, run.run_time + elapsed
    train_metrics.update({"train/lr": run.lr, "train/tokens_per_s": interval_tokens / max(elapsed, 1e-9),
                          "train/n_truncated": float(n_truncated), "train/epoch": run.step / run.steps_per_epoch,
                          "train/peak_memory_mb": peak_memory_mb(run.device)})
    run.logger.log(run.step, train_metrics)
    run.result.last_train = train_metrics
    progress.set_postfix(loss=f"{train_metrics.get('train/loss', float('nan')):.3f}",
                         tok_s=f"{train_metrics['train/tokens_per_s']:.0f}")
    run.interval, run.records, run.interval_tokens, run.n_truncated = {}, [], 0, 0
    run.interval_start = time.perf_counter()


# ---- validation and checkpoints ------------------------------------------------------------------


def _validate(run: _Run) -> bool:
    """Validates the whole split, logs `val/*`; True when the configured metric is a new best.
    Validation time does not count as training throughput."""
    cfg, c = run.cfg, run.cfg.checkpoint
    pause = time.perf_counter()
    eval_batch_size = max(1, (cfg.training.eval_batch_size or cfg.training.batch_size) // run.dctx.world_size)
    val = run_validation(run.view, run.objective, run.val_split.items, run.train_eval_items, run.val_collate,
                         eval_batch_size, run.device, lambda: _autocast(cfg, run.device), run.dctx)
    run.logger.log(run.step, val)
    run.result.last_val = val
    metric = val.get(c.best_metric)
    new_best = metric is not None and math.isfinite(metric) and (
        run.best is None or (metric < run.best["value"] if c.best_mode == "min" else metric > run.best["value"]))
    if new_best:
        run.best = {"value": metric, "step": run.step}
    run.interval_start += time.perf_counter() - pause
    return new_best


def _save(run: _Run, new_best: bool) -> Path:
    """A checkpoint of this step (atomic; one process: full optimizer state, several: DCP shards),
    marked best if it is, then the oldest beyond `save_total_limit` removed."""
    dctx, c, main = run.dctx, run.cfg.checkpoint, run.dctx.is_main
    shared = {"step": run.step, "best": run.best, "scheduler": run.scheduler.state_dict(),
              "feed": run.feed.state_dict()}
    own_state = {"objective": run.objective.state_dict(), "rng": rng_state(), "rank": dctx.rank}
    if not dctx.enabled:  # the checkpoint format, not a separate loop: a full optimizer state
        saved = ckpt.save_checkpoint(run.run_dir, run.step, run.model, run.tokenizer,
                                     {**shared, "optimizer": run.optimizer.state_dict(), **own_state})
    else:
        def write_model(path: Path) -> None:
            exportable = run.engine.exportable()  # a collective under FSDP2
            if main:
                ckpt.save_model(exportable, run.tokenizer, path)

        saved = ckpt.save_checkpoint_sharded(
            run.run_dir, run.step, dctx, write_model=write_model,
            write_shards=lambda path: distributed.save_sharded(run.bundle, run.optimizer, path),
            trainer_state={**shared, **own_state}, rank_state=own_state)
    if main:
        if c.save_best and new_best:
            ckpt.mark_best(run.run_dir, saved)
        ckpt.rotate_checkpoints(run.run_dir, c.save_total_limit)
    return saved


def _finish(run: _Run) -> TrainResult:
    result = run.result
    result.steps = run.step
    result.tokens_per_s = run.run_tokens / run.run_time if run.run_time > 0 else 0.0
    result.peak_memory_mb = peak_memory_mb(run.device)
    result.best_checkpoint = ckpt.best_checkpoint(run.run_dir)
    if result.stopped_by is not None:
        log.info(f"stopped by {result.stopped_by} after step {run.step} of {run.total_steps}; checkpoint saved to "
                 f"{result.stop_checkpoint}; continue with: wmtp train --resume {run.run_dir}")
    log.info(f"run directory: {run.run_dir}")
    return result


def _export_final(run_dir: Path, model, tokenizer) -> Path:
    """`final/` is replaced only once the new export is complete."""
    final = run_dir / "final"
    with building_dir(final) as tmp:
        ckpt.save_model(model, tokenizer, tmp)
    return final


def _dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
