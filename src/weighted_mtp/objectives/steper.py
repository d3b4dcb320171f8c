"""StepER's objective: one cross-entropy per reasoning ability (init = first step, exp = middle
steps, agg = final step; the batch's `step_task` says which row trains which), combined with
learned homoscedastic uncertainty (`steper.weighting: uncertainty`) or with every s_j held at its
initial value (`uniform`, the ablation). Each L_j is the token-mean CE over that task's target
tokens in the batch, so a task's weight does not depend on how many of its rows a batch drew.

Vanilla-KD is not a separate objective: it is `baseline` on final-step rows only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from weighted_mtp.config.registry import register_objective
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.data.records import STEP_TASKS
from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
from weighted_mtp.losses.uncertainty import sigmas, uncertainty_weighted_loss
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.objectives.base import ObjectiveOutput, PolicyObjective


@dataclass
class StepERConfig:
    """The `steper:` config section: how the step losses combine, and the embedded world's seed."""

    weighting: Literal["uncertainty", "uniform"] = "uncertainty"
    init_log_var: float = 0.0
    world_seed: int = 0


@register_objective("steper", section=("steper", StepERConfig))
class StepERObjective(PolicyObjective):
    def __init__(self, cfg):
        super().__init__(cfg)
        s = cfg.steper
        self.learned = s.weighting == "uncertainty"
        self.log_vars = nn.Parameter(torch.full((len(STEP_TASKS),), float(s.init_log_var)),
                                     requires_grad=self.learned)

    def extra_parameters(self) -> list:
        return [self.log_vars] if self.learned else []

    def to(self, device) -> None:
        self.log_vars.data = self.log_vars.data.to(device)

    def state_dict(self) -> dict:
        return {"log_vars": self.log_vars.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.log_vars.data.copy_(state["log_vars"].to(self.log_vars.device))

    def __call__(self, model: MTPModel, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput:
        out = model(batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"]
        task = batch.get("step_task")
        if task is None:  # rows without a step kind (e.g. final-step-only data) are aggregation rows
            task = torch.full((labels.shape[0],), STEP_TASKS.index("agg"), dtype=torch.long, device=labels.device)
        loss_cfg = self.cfg.training.loss
        bias = getattr(model.unembedding, "bias", None)
        losses, present, metrics, sums = [], [], {}, {}
        all_sum = all_count = 0.0
        for j, name in enumerate(STEP_TASKS):
            rows = (task == j).unsqueeze(1)
            task_labels = torch.where(rows, labels, torch.full_like(labels, IGNORE_INDEX))
            # Only this task's rows have targets; the loss gathers target rows before its matmul,
            # so the three calls together cost one pass over the batch.
            result = mtp_cross_entropy(out.head_hidden, model.unembedding.weight, task_labels, None,
                                       unembed_bias=bias, normalization=loss_cfg.normalization,
                                       chunk_size=loss_cfg.chunk_size)
            n_next = result.per_head_tokens[0].to(torch.float32)
            has = bool(n_next > 0)
            losses.append(result.loss if has else result.loss.new_zeros(()))
            present.append(has)
            ce = result.per_head_ce[0]
            if has:
                metrics[f"ce_{name}"] = ce
                all_sum, all_count = all_sum + ce * n_next, all_count + n_next
            sums[f"ce_{name}"] = (ce.nan_to_num(0.0) * n_next, n_next)
        task_losses = torch.stack(losses)
        present_t = torch.tensor(present, device=task_losses.device)
        loss = uncertainty_weighted_loss(task_losses, self.log_vars.to(task_losses.dtype), present_t)
        for j, name in enumerate(STEP_TASKS):
            metrics[f"sigma_{name}"] = sigmas(self.log_vars)[j]
        ce_all = all_sum / all_count if all_count else torch.tensor(float("nan"))
        metrics["loss"] = loss.detach()
        metrics["ce"] = torch.as_tensor(ce_all).detach()
        # Validation "loss" is the plain next-token CE over every target token, comparable with
        # the Vanilla-KD run's (whose objective is baseline) and independent of the sigmas.
        sums["loss"] = (torch.as_tensor(all_sum, dtype=torch.float32).detach(),
                        torch.as_tensor(all_count, dtype=torch.float32))
        return ObjectiveOutput(loss=loss, metrics=metrics, sums=sums)
