"""Data parallelism for the one loop: DDP or FSDP2 over a process group that torchrun describes
in the environment (gloo on CPU, nccl on CUDA). With one process nothing here changes anything.

What the loop gets from this module:
- `setup`/`teardown`: the process group (from `WORLD_SIZE`/`RANK`/`MASTER_*`), this rank's device.
- `shard`: this rank's strided share of a global batch (every rank draws the same global batch
  from the same seed, so shares never overlap and together are exactly the global batch).
- `Engine`: the model as wrapped for training (DDP, or `fully_shard` per decoder block / MTP
  head / value head, then the root), what objectives call (`view`), gradient sync only on the
  last accumulation micro-step, clipping over sharded gradients, the full (HF-loadable) export
  gathered on rank 0, and a torch.distributed.checkpoint (DCP) state for resume on any number
  of processes.

How losses combine across ranks: each rank's loss is a mean over its own share (its target
tokens, or its rows for objectives whose loss is a mean over sequences or pairs). Gradients are
averaged over ranks, so each rank's loss is scaled by world_size * (its units / all ranks'
units): the step then follows the gradient of the global-batch mean, as one process on the
whole batch would (exactly, for token-mean and row-mean losses).
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.errors import ConfigError
from weighted_mtp.models.hf_layout import find_layout

STRATEGIES = ("ddp", "fsdp2")


# ---- process group -----------------------------------------------------------------------------


@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False  # this module initialised the group (and destroys it at the end)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place; returns the tensor. CPU tensors are fine on gloo; on nccl they travel via the device."""
        if not self.enabled:
            return tensor
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            moved = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(moved, op=ops[op])
            tensor.copy_(moved.cpu())
        else:
            dist.all_reduce(tensor, op=ops[op])
        return tensor

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it fills caches: built datasets, indexes, the micro model),
        then the others, so no two processes write the same cache file at once. An error on rank 0
        still releases the others (they then fail on their own, the same way)."""
        if not self.enabled:
            yield
            return
        if not self.is_main:
            dist.barrier()
        try:
            yield
        finally:
            if self.is_main:
                dist.barrier()


def setup(cfg) -> DistContext:
    """The process group described by torchrun's environment (`WORLD_SIZE` > 1), or an already
    initialised one; a single process otherwise."""
    if dist.is_available() and dist.is_initialized():
        ctx = DistContext(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return DistContext()
        if not dist.is_available():
            raise ConfigError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
        use_cuda = _wants_cuda(cfg.runtime.device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=timedelta(seconds=cfg.distributed.timeout_s))
        ctx = DistContext(dist.get_world_size(), dist.get_rank(), local_rank, owns_group=True)
    if ctx.enabled and cfg.distributed.strategy not in STRATEGIES:
        raise ConfigError(f"config key 'distributed.strategy': one of {', '.join(STRATEGIES)}, "
                          f"got {cfg.distributed.strategy!r}")
    return ctx


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _wants_cuda(name: str) -> bool:
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


def device_for(ctx: DistContext, name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def shard(items: list, ctx: DistContext) -> list:
    """This rank's strided share: rows rank, rank + N, rank + 2N, ..."""
    return items[ctx.rank::ctx.world_size] if ctx.enabled else items


def loss_units(objective) -> str:
    """What an objective's loss is a mean over, for combining ranks' losses exactly: "tokens"
    (target tokens: the MTP losses) or "rows" (sequences or pairs: pairwise batches, the
    critic's sequence-mean losses). An objective may declare `loss_units` itself."""
    declared = objective.loss_units
    if declared in ("tokens", "rows", "policy_tokens"):
        return declared
    return "rows" if objective.batch_kind == "pairwise" else "tokens"


def count_units(batch: dict, units: str) -> int:
    """This micro-batch's loss units, counted on the host before the copy to the device."""
    if units == "rows":
        key = "pos_input_ids" if "pos_input_ids" in batch else "input_ids"
        return int(batch[key].shape[0])
    if units == "policy_tokens":  # the policy loss's targets: the correct side of pairwise batches
        key = "labels" if "labels" in batch else "pos_labels"
        return int((batch[key] != IGNORE_INDEX).sum())
    if "labels" in batch:
        return int((batch["labels"] != IGNORE_INDEX).sum())
    return int(sum(int((batch[k] != IGNORE_INDEX).sum()) for k in ("pos_labels", "neg_labels") if k in batch))


# ---- the wrapped model -------------------------------------------------------------------------


class ModelView:
    """What objectives receive under DDP: calling it runs the DDP forward (so its hooks see the
    step), every attribute (`unembedding`, `values`, `extra_heads`, ...) is the model's own."""

    def __init__(self, wrapper: nn.Module, module: nn.Module):
        self.__dict__["_wrapper"], self.__dict__["_module"] = wrapper, module

    def __call__(self, *args, **kwargs):
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["_module"], name)

    def train(self, mode: bool = True):
        self._wrapper.train(mode)
        return self

    def eval(self):
        return self.train(False)


class Engine:
    """The trained model as the loop drives it; `strategy` is "none" for one process."""

    def __init__(self, model: nn.Module, ctx: DistContext, strategy: str = "none"):
        self.module, self.ctx, self.strategy = model, ctx, strategy
        self.view: Any = model
        self._ddp: nn.Module | None = None
        self._shadow: nn.Module | None = None  # fsdp2, rank 0: an unsharded skeleton for exports

    # -- training step --

    def sync_context(self, sync: bool):
        """Gradient all-reduce only on the last accumulation micro-step."""
        if self.strategy == "ddp" and not sync:
            return self._ddp.no_sync()
        if self.strategy == "fsdp2":
            self.module.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    def sync_unwrapped_grads(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of trained parameters that no wrapper reduces (an objective's own
        parameters, e.g. a separate critic's value head that keeps training)."""
        if not self.ctx.enabled:
            return
        wrapped = {id(p) for p in self.module.parameters()}
        for p in params:
            if id(p) not in wrapped and p.grad is not None:
                self.ctx.all_reduce(p.grad)
                p.grad.div_(self.ctx.world_size)

    def clip_grad_norm(self, params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """Global L2 norm over every gradient (sharded DTensors and plain tensors alike), then clip."""
        if self.strategy != "fsdp2":
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in params if p.grad is not None]
        sharded = [g for g in grads if isinstance(g, DTensor)]
        plain = [g for g in grads if not isinstance(g, DTensor)]
        total_sq = torch.zeros((), dtype=torch.float32)
        if sharded:
            norm = torch.nn.utils.get_total_norm(sharded, 2.0)
            norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
            total_sq = total_sq + norm.float().cpu() ** 2
        if plain:
            total_sq = total_sq + torch.nn.utils.get_total_norm(plain, 2.0).float().cpu() ** 2
        total = total_sq.sqrt()
        for group in (sharded, plain):  # foreach ops take DTensors or tensors, not both at once
            if group:
                torch.nn.utils.clip_grads_with_norm_([_AsParam(g) for g in group], max_norm,
                                                     total.to(group[0].device))
        return total

    # -- state --

    def state_module(self, extra: list) -> nn.Module:
        """The model plus the objective's own trained parameters (`extra_parameters()` items), one
        module whose parameter names key the optimizer state in DCP checkpoints, so that state
        reloads on any number of processes."""
        return _StateBundle(self.module, [item[1] if isinstance(item, tuple) else item for item in extra])

    def exportable(self) -> nn.Module | None:
        """On rank 0: a module holding the full weights, for `save_pretrained` to write exactly as
        one process would (the model itself unless sharded); None on other ranks. Under FSDP2 a
        collective: the shards are gathered into rank 0's parameter-less copy of the model."""
        if self.strategy != "fsdp2":
            return self.module if self.ctx.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.ctx.is_main:
            return None
        _, unexpected = self._shadow.load_state_dict(state, strict=False, assign=True)
        unfilled = [n for n, p in self._shadow.named_parameters() if p.is_meta]
        if unfilled or unexpected:
            raise RuntimeError(f"gathered weights do not fit the model: unfilled {unfilled[:3]}, "
                               f"unexpected {unexpected[:3]}")
        return self._shadow


class _AsParam:
    """`clip_grads_with_norm_` reads `.grad` of what it is given; this hands it one gradient."""

    def __init__(self, grad: torch.Tensor):
        self.grad = grad


class _StateBundle(nn.Module):
    def __init__(self, model: nn.Module, extra: list[nn.Parameter]):
        super().__init__()
        self.model = model
        self.objective = nn.ParameterList(extra)


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The LM's decoder blocks: through the HF layout for an MTP policy, else the largest list of
    same-type modules (a critic's backbone, whatever wraps it)."""
    lm = getattr(model, "lm", None)
    if lm is not None:
        return list(find_layout(lm).layers)
    best: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(best) and len({type(m) for m in module}) == 1:
            best = list(module)
    return best


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters live on the meta device (no memory); buffers are copied."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo)


def build_engine(model: nn.Module, cfg, ctx: DistContext, device: torch.device) -> Engine:
    """Wrap `model` (already on `device`) for this run. Optimizers are built afterwards, on
    `engine.module`, so they see the sharded parameters."""
    dcfg = cfg.distributed
    if dcfg.activation_checkpointing:
        from torch.distributed._composable import checkpoint

        blocks = decoder_blocks(model)
        if not blocks:
            raise ConfigError("distributed.activation_checkpointing: cannot find the model's decoder blocks")
        for block in blocks:  # keeps parameter names (no wrapper module), so saves are unchanged
            checkpoint(block)
    if not ctx.enabled:
        return Engine(model, ctx)
    if dcfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        engine = Engine(model, ctx, "ddp")
        if any(p.requires_grad for p in model.parameters()):
            ids = [device.index] if device.type == "cuda" else None
            engine._ddp = DDP(model, device_ids=ids, forward_sync_buffers=False)  # no buffer broadcast per forward
            engine.view = ModelView(engine._ddp, model)
        else:  # nothing to reduce (every trained parameter belongs to the objective)
            engine.strategy = "none"
        return engine
    return _fully_shard(model, cfg, ctx, device)


def _fully_shard(model: nn.Module, cfg, ctx: DistContext, device: torch.device) -> Engine:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    engine = Engine(model, ctx, "fsdp2")
    if ctx.is_main:
        engine._shadow = _meta_copy(model)
    mesh = init_device_mesh(device.type, (ctx.world_size,))
    bf16 = cfg.training.mixed_precision == "bf16"
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    fp32 = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
    for block in decoder_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    for head in getattr(model, "extra_heads", None) or []:
        fully_shard(head, mesh=mesh, mp_policy=mp)
    value_head = getattr(model, "value_head", None)
    if value_head is not None:
        fully_shard(value_head, mesh=mesh, mp_policy=fp32)  # values are computed in fp32
    # The root holds the embeddings, the final norm and the (tied) unembedding. The fused loss
    # reads `model.unembedding.weight` after the forward, so the root stays unsharded until
    # backward has run: that read is the full weight, and its gradient is reduce-scattered
    # with the root's at the end of backward.
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    # FSDP2 warns that the root's output holds views (in-place ops on them would skip the root's
    # pre-backward all-gather); the root is never resharded before its backward, so there is
    # nothing to skip.
    warnings.filterwarnings("ignore", message=rf"FSDP2-wrapped module \({type(model).__name__}\) returned a view")
    return engine


# ---- DCP training state ------------------------------------------------------------------------


def save_sharded(bundle: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Model + optimizer as DCP shards (every rank writes its own; a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(bundle, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))


def load_sharded(bundle: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Reads a DCP state written by any number of processes into this run's (possibly
    differently sharded, possibly single-process) model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(bundle, optimizer)
    state = {"model": model_state, "optim": optim_state}
    with warnings.catch_warnings():  # one process reading shards: DCP says it assumes exactly that
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(bundle, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def load_full_optimizer_state(engine: Engine, bundle: nn.Module, optimizer: torch.optim.Optimizer,
                              state: dict) -> None:
    """A single-process checkpoint's `optimizer.state_dict()` (parameters by index) into this
    run's optimizer: directly when parameters are whole (one process, DDP), re-keyed by name and
    sharded when they are not (FSDP2)."""
    if engine.strategy != "fsdp2":
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {id(p): n for n, p in bundle.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    index_to_name = dict(enumerate(order))
    by_name = {
        "state": {index_to_name[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [index_to_name[i] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(bundle, optimizer, optim_state_dict=by_name,
                             options=StateDictOptions(full_state_dict=True))


# ---- metrics -----------------------------------------------------------------------------------


def combine_interval(ctx: DistContext, local: list[tuple[dict[str, float], float]]) -> dict[str, list[float]]:
    """Per micro-batch, every rank's metrics weighted by its loss units (what one process on the
    whole micro-batch would report for token- or row-means), as lists over the interval."""
    gathered = ctx.all_gather_object(local)
    out: dict[str, list[float]] = {}
    for i in range(len(local)):
        num: dict[str, float] = {}
        den: dict[str, float] = {}
        for rank_items in gathered:
            metrics, units = rank_items[i]
            for name, value in metrics.items():
                if value == value and abs(value) != float("inf"):  # finite
                    num[name] = num.get(name, 0.0) + units * value
                    den[name] = den.get(name, 0.0) + units
                else:
                    num.setdefault(name, 0.0)
                    den.setdefault(name, 0.0)
        for name in num:
            out.setdefault(name, []).append(num[name] / den[name] if den[name] > 0 else float("nan"))
    return out


def gather_sums(ctx: DistContext, sums: dict[str, list[float]], samples: dict[str, list[torch.Tensor]]
                ) -> tuple[dict[str, list[float]], dict[str, list[torch.Tensor]]]:
    """Validation (numerator, denominator) sums added over ranks; per-sample tensors concatenated
    in rank order."""
    if not ctx.enabled:
        return sums, samples
    total: dict[str, list[float]] = {}
    merged: dict[str, list[torch.Tensor]] = {}
    for rank_sums, rank_samples in ctx.all_gather_object((sums, samples)):
        for name, (num, den) in rank_sums.items():
            acc = total.setdefault(name, [0.0, 0.0])
            acc[0] += num
            acc[1] += den
        for name, parts in rank_samples.items():
            merged.setdefault(name, []).extend(parts)
    return total, merged


def describe(ctx: DistContext, strategy: str, cfg) -> str:
    if not ctx.enabled:
        return ""
    extras = []
    if cfg.distributed.activation_checkpointing:
        extras.append("activation checkpointing")
    backend = dist.get_backend()
    return (f"distributed: {strategy} over {ctx.world_size} processes ({backend})"
            + (", " + ", ".join(extras) if extras else ""))
