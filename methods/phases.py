"""Phases shared by the pipelines: supernet set-up, search epochs, inheriting, retraining.

Every method searches under the same budget (README, "Budgets"): the same weight optimizer
and schedule over ``search_epochs`` epochs of the search split, the same alpha initialisation
and optimizer family, and two-stage methods retrain with the same recipe for
``retrain_epochs`` epochs of the whole training set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from methods.base import Method, MethodResult
from methods.steps import PATHS, StepOptions
from nasbench.arch_params import ArchParameters
from nasbench.context import RunContext
from nasbench.errors import UserError
from nasbench.retrain_recipe import drop_path_schedule, with_auxiliary
from nasbench.spaces.base import Arch
from nasbench.supernet import Supernet
from nasbench.train import StepFn, WarmupCosine, grad_clip, plain_step, weight_optimizer


@dataclass
class SupernetSearch:
    """The state of one supernet search: network, alpha and both optimizers."""

    supernet: Supernet
    arch: ArchParameters
    weight_opt: torch.optim.Optimizer
    schedule: WarmupCosine
    alpha_opt: torch.optim.Optimizer | None
    sampler: torch.Generator
    #: what weight steps run: the supernet, under DistributedDataParallel in a distributed run
    #: (alpha steps on held-out batches run ``supernet`` itself: they train no weights)
    trained: nn.Module | None = None
    #: how the steps treat the batch and the candidates that did not run (:func:`step_options`)
    options: StepOptions = StepOptions()

    def __post_init__(self) -> None:
        if self.trained is None:
            self.trained = self.supernet

    def checkpoint_state(self, ctx: RunContext) -> dict[str, Any]:
        """What a checkpoint of a search phase holds besides the network, optimizer and schedule."""
        return {
            "search.alpha": self.arch,
            "search.alpha_opt": self.alpha_opt,
            "search.sampler": self.sampler,
            "estimator": ctx.estimator,
            "paths": PATHS,
        }

    def alpha_info(self) -> dict[str, Any]:
        """Per-epoch metrics of the architecture distribution, at the epoch's end: ``alpha_probs``
        (p = softmax(alpha) per decision, masked candidates 0, 5 decimals) is what the report's
        alpha-trajectory figure plots (the DSNAS paper's Figures 4-5); ``fixed`` lists the decisions
        frozen at an op as [decision, op] (their p no longer changes)."""
        probs = self.arch.probs().detach().float().cpu()
        return {
            "alpha_entropy": self.arch.entropy(),
            "fixed_layers": len(self.arch.fixed),
            "argmax": list(self.arch.derive()),
            "alpha_probs": [[round(float(v), 5) for v in row] for row in probs],
            "fixed": [[int(i), int(k)] for i, k in sorted(self.arch.fixed.items())],
        }


UNSAMPLED_WEIGHTS = ("step", "skip")


def step_options(method_cfg: Mapping[str, Any], paths: int = 1, clip: float | None = None) -> StepOptions:
    """The method config's ``unsampled_weights``: ``step`` (official DSNAS, SPOS, GDAS, DARTS, SNAS:
    every candidate's gradient is zeroed, not dropped, so candidates that did not run still get
    weight decay and their momentum step) or ``skip`` (official ProxylessNAS: they stay untouched)."""
    policy = str(method_cfg.get("unsampled_weights", "step"))
    if policy not in UNSAMPLED_WEIGHTS:
        raise UserError(f"method.unsampled_weights={policy}: must be one of {', '.join(UNSAMPLED_WEIGHTS)}")
    alpha_clip = method_cfg.get("alpha_grad_clip")
    alpha_clip = None if alpha_clip is None else float(alpha_clip)
    return StepOptions(paths=paths, set_to_none=policy == "skip", grad_clip=clip, alpha_grad_clip=alpha_clip)


def start_search(
    method: Method, search_epochs: int, horizon_extra_steps: int = 0, paths_per_step: int = 1
) -> SupernetSearch:
    """Build the supernet, alpha (``method.alpha_init``) and the optimizers.

    The weights' cosine spans ``search_epochs`` of the search split plus ``horizon_extra_steps``
    (DSNAS: the finetune after the fork continues the same cosine). alpha's update is the
    method's :meth:`~methods.base.Method.arch_optimizer` (Adam by default; DSO-NAS: a proximal step).
    """
    ctx, cfg = method.ctx, method.cfg
    supernet = ctx.place(ctx.space.build_supernet(one_stage=method.one_stage))
    method.prepare_supernet(supernet)
    init = cfg.get("alpha_init") or {"mean": 0.0, "std": 1e-3}
    arch = ArchParameters(ctx.space.candidate_mask(), init["mean"], init["std"], ctx.generator("alpha-init"))
    weight_opt = weight_optimizer(supernet, ctx.budget)
    alpha_opt = method.arch_optimizer(arch, weight_opt) if ctx.estimator.learns_alpha else None
    steps = ctx.trainer.steps_per_epoch(search=True)
    schedule = WarmupCosine(
        weight_opt,
        float(ctx.budget["lr"]),
        search_epochs * steps + horizon_extra_steps,
        warmup_steps=round(float(ctx.budget.get("warmup_epochs", 0)) * steps),
        final_lr=float(ctx.budget.get("lr_min", 0.0)),
    )
    sampler = ctx.generator("arch-sample")  # the same stream on every rank: the same paths
    # DDP must look for unused weights when a step runs one path or a fixed decision runs one op
    # (or when k paths per step leave every rank with different candidates unused)
    partial = ctx.estimator.single_path or method.fixes_decisions or paths_per_step > 1
    trained = ctx.parallel(supernet, partial)
    options = step_options(method.cfg, paths_per_step, grad_clip(ctx.budget))
    return SupernetSearch(supernet, arch, weight_opt, schedule, alpha_opt, sampler, trained, options)


def run_search_phase(
    ctx: RunContext,
    name: str,
    epochs: int,
    step: StepFn,
    search: SupernetSearch,
    on_epoch_start: Callable[[int], Mapping[str, Any] | None] | None = None,
    epoch_info: Callable[[], Mapping[str, Any]] | None = None,
) -> None:
    """``epochs`` epochs of ``step`` over the search split, metered as phase ``name``; each epoch's
    metrics hold ``epoch_info()`` (default: the distribution's, :meth:`SupernetSearch.alpha_info`)."""
    if epochs > 0:
        ctx.trainer.run_phase(
            name,
            epochs,
            step,
            search.supernet,
            search.schedule,
            on_epoch_start=on_epoch_start,
            epoch_info=epoch_info or search.alpha_info,
            search=True,
            optimizer=search.weight_opt,
            state=search.checkpoint_state(ctx),
        )


def estimator_schedule(ctx: RunContext, epochs: int) -> Callable[[int], Mapping[str, Any]]:
    """The estimator's per-epoch hook (temperature schedules) for a search of ``epochs``."""
    return lambda epoch: ctx.estimator.on_epoch_start(epoch, epochs)


def inherit(ctx: RunContext, arch: Arch, supernet: Supernet) -> tuple[nn.Module, float]:
    """The child of ``arch`` with the supernet's weights and its search-stage accuracy (after
    BatchNorm recalibration; uncounted, it measures the benchmark, not the method)."""
    child = ctx.place(ctx.space.build_child(arch, supernet))
    return child, ctx.search_accuracy(child)


def retrain(ctx: RunContext, arch: Arch, phase: str = "retrain", counted: bool = True) -> nn.Module:
    """Train the evaluation network of ``arch`` from scratch with the shared recipe (metered as
    ``phase``): the stand-alone child, or the space's own evaluation network with its recipe
    (darts: auxiliary head, drop-path, cutout; nasbench/retrain_recipe.py). The budget's
    ``retrain_batch_size`` and ``retrain_lr_min`` (null: the search's) set the retrain's batch and
    the cosine's floor. Returns the network as deployed (without an auxiliary head)."""
    budget = ctx.budget
    epochs = int(budget["retrain_epochs"])
    if epochs < 1:
        raise UserError(f"retrain_epochs={epochs}: a two-stage method must retrain for at least 1 epoch")
    recipe = ctx.space.eval_recipe()
    batch = int(budget.get("retrain_batch_size") or 0) or None
    floor = budget.get("retrain_lr_min")
    child = ctx.place(ctx.space.build_eval_network(arch))
    optimizer = weight_optimizer(child, budget)
    steps = ctx.trainer.steps_per_epoch(batch_size=batch)
    schedule = WarmupCosine(
        optimizer,
        float(budget["lr"]),
        epochs * steps,
        warmup_steps=round(float(budget.get("warmup_epochs", 0)) * steps),
        final_lr=float(budget.get("lr_min", 0.0) if floor is None else floor),
    )
    loss = with_auxiliary(ctx.trainer.loss, recipe.auxiliary_weight)
    step = plain_step(ctx.parallel(child), optimizer, loss, grad_clip(budget))
    on_epoch = drop_path_schedule(child, recipe.drop_path, epochs) if hasattr(child, "drop_path_prob") else None
    ctx.trainer.run_phase(
        phase,
        epochs,
        step,
        child,
        schedule,
        on_epoch_start=on_epoch,
        counted=counted,
        optimizer=optimizer,
        loader_options={"batch_size": batch, "cutout": recipe.cutout},
    )
    return ctx.space.deployable(child)


def two_stage_finish(ctx: RunContext, arch: Arch, supernet: Supernet, extra: Mapping[str, Any]) -> MethodResult:
    """Measure the derived child with inherited weights, then retrain it from scratch."""
    _, search_acc = inherit(ctx, arch, supernet)
    child = retrain(ctx, arch)
    return MethodResult(arch=arch, search_acc=search_acc, child=child, extra=dict(extra))


def alpha_extra(method: Method, arch: ArchParameters) -> dict[str, Any]:
    """What every alpha-learning method records about its final distribution."""
    return {"alpha_probs": arch.probs().detach().tolist(), "alpha_lr": method.alpha_lr()}
