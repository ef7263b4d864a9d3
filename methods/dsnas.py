"""DSNAS: direct NAS without parameter retraining (Hu et al., CVPR 2020).

Phases, following the paper (Sec. 3-5) and the official code (SNAS-Series/DSNAS):
1. ``warmup`` (optional, ``alpha_warmup_epochs``): the supernet trains with paths sampled from
   the initial, near-uniform p; alpha is frozen (MMRazor's ``pretrain_epochs``).
2. ``search``: every step samples ``paths_per_step`` independent paths, one per sub-batch, runs
   one forward and one backward, and updates the weights and alpha from that same batch and that
   same backward (the estimator turns each layer's credit into alpha's gradient; alpha gets the
   mean of the paths' estimates). At every epoch start, progressive early fix freezes a layer
   whose top probability beats the second by at least h = 0.3, at its argmax.
   Optional FLOPs penalty: eta * sum_i p_i(s_i) FLOPs_i(s_i) in MFLOPs, added per path when the
   path's choice blocks reach a threshold (:func:`official_penalty_coef` says what the official
   run's eta was in the suite's units).

``paths_per_step`` (default ``auto``: one path per 128 images of the step's batch, so 8 at paper
scale and 1 at the cpu and tiny scales). The official search (train_imagenet.py, 8 GPUs) seeds
every rank differently (``seed * rank``), so a step of 1024 images is 8 sub-batches of 128 on 8
independent paths, and alpha gets the mean of 8 credit estimates; ``paths_per_step=1`` is the
single path per step of the paper's text. Every sub-batch has its own BatchNorm statistics, as
on one GPU. Under torchrun the k paths are shared out over the ranks (nasbench.distributed).

The weights of candidates that did not run get their weight decay and momentum step
(``unsampled_weights: step``), as in the official code, whose ``zero_grad`` zeroed gradients.
3. fork (search-from-search): the argmax child keeps its supernet weights, its accuracy there is
   ``search_acc`` (after BatchNorm recalibration), then its BatchNorm running statistics are
   reset. Official: epoch 80 of 240.
4. ``finetune``: the child trains alone, a fresh SGD with a cosine from the fork's lr to zero
   (official: 160 epochs). Nothing is retrained from scratch: this child is deployed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from methods.base import METHODS, Method, MethodResult, SearchOutcome
from methods.estimators.base import Estimator
from methods.phases import run_search_phase, start_search
from methods.steps import estimator_step, weight_step
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.evaluate import reset_bn_stats
from nasbench.supernet import Selection
from nasbench.train import WarmupCosine, grad_clip, plain_step, weight_optimizer


def early_fix(arch: ArchParameters, threshold: float) -> list[int]:
    """Fix every free decision whose top-1 probability beats its top-2 by >= ``threshold``.

    The fixed op is the argmax (not candidate 0, a bug of one public port). Returns the newly
    fixed decisions.
    """
    probs = arch.probs().detach()
    top = probs.topk(2, dim=-1)
    newly = []
    for i in range(probs.shape[0]):
        if i not in arch.fixed and float(top.values[i, 0] - top.values[i, 1]) >= threshold:
            arch.fix(i, int(top.indices[i, 0]))
            newly.append(i)
    return newly


#: the official search's ``--flops_loss_coef`` and its number of GPUs (SNAS-Series/DSNAS README)
OFFICIAL_FLOPS_LOSS_COEF, OFFICIAL_WORLD_SIZE = 1e-6, 8


def official_penalty_coef(
    flops_loss_coef: float = OFFICIAL_FLOPS_LOSS_COEF, world_size: int = OFFICIAL_WORLD_SIZE
) -> float:
    """The official run's penalty coefficient in this suite's units (per MFLOP, against the
    gradient of the batch's mean loss): flops_loss_coef * world_size^2.

    In network.py each rank backpropagates ``criterion / world_size`` and multiplies alpha's
    gradient by the credit of that same loss, so the task part of alpha's gradient is divided by
    world_size^2 on every rank, while ``flops_loss_coef * flops_loss`` is backpropagated as is;
    ``average_gradients`` then sums both over the ranks. Against the mean-loss gradient the
    penalty is therefore world_size^2 times its flag: 8^2 * 1e-6 = 6.4e-5 for the published run.
    """
    return float(flops_loss_coef) * int(world_size) ** 2


def flops_penalty_grad(
    arch: ArchParameters, sample: Tensor, mflops: Tensor, coef: float, threshold: float
) -> Tensor | None:
    """Gradient of coef * sum_i p_i(s_i) F_i(s_i) when the sampled blocks' MFLOPs >= threshold
    (official network.py: ``total_flops >= 290`` over the choice blocks, in MFLOPs)."""
    rows = torch.arange(len(sample))
    cost = mflops[rows, sample]
    if float(cost.sum()) < threshold:
        return None
    alpha = arch.alpha.detach().clone().requires_grad_()
    probs = torch.softmax(alpha.masked_fill(~arch.mask, float("-inf")), dim=-1)
    penalty = coef * (probs[rows, sample] * cost.to(probs.dtype)).sum()
    (grad,) = torch.autograd.grad(penalty, alpha)
    return grad


def resolve_paths(value: Any, batch_size: int) -> int:
    """``paths_per_step`` as a number; ``auto``: one path per 128 images of the step's batch, as
    the official 8 GPUs x 128 images (at least 1)."""
    return max(1, batch_size // 128) if str(value) == "auto" else int(value)


@METHODS.register("dsnas")
class DSNAS(Method):
    name = "dsnas"
    one_stage = True
    alpha = "optional"
    fixes_decisions = True

    @classmethod
    def check_estimator(cls, cfg, estimator) -> None:
        super().check_estimator(cfg, estimator)
        if float((cfg.get("flops_penalty") or {}).get("coef", 0.0)) > 0 and not estimator.single_path:
            raise UserError(
                f"method.flops_penalty needs the sampled path's FLOPs; estimator {estimator.name} runs every"
                " candidate: use a single-path estimator (dsnas, gumbel_st, binary_gate) or flops_penalty.coef=0"
            )
        paths = cfg.get("paths_per_step", "auto")
        if str(paths) != "auto" and (not str(paths).isdigit() or int(paths) < 1):
            raise UserError(f"method.paths_per_step={paths}: must be auto or a whole number of at least 1")
        if getattr(estimator, "needs_reward", False):
            raise UserError(
                f"estimator {estimator.name} learns from a held-out reward; dsnas updates alpha from the"
                " training batch's backward: use method=reinforce"
            )

    def paths_per_step(self) -> int:
        """``method.paths_per_step`` (:func:`resolve_paths`), checked against the estimator."""
        paths = resolve_paths(self.cfg.get("paths_per_step", "auto"), int(self.ctx.budget["batch_size"]))
        estimator = self.ctx.estimator
        if paths > 1 and type(estimator).after_alpha_step is not Estimator.after_alpha_step:
            raise UserError(
                f"method.paths_per_step={paths}: estimator {estimator.name} adjusts alpha after each step for its"
                " one sampled path; use method.paths_per_step=1 with it"
            )
        if paths > int(self.ctx.budget["batch_size"]):
            raise UserError(f"method.paths_per_step={paths}: at most batch_size={self.ctx.budget['batch_size']}")
        return paths

    def finish(self, outcome: SearchOutcome) -> MethodResult:
        """The fork: the argmax child keeps its supernet weights (search_acc), then the finetune."""
        ctx = self.ctx
        finetune_epochs = self.epochs("finetune_epochs")
        child = ctx.place(ctx.space.build_child(outcome.arch, outcome.supernet))
        # in the checkpoint from here: with no finetune, the recalibrated child is the deployed one
        ctx.trainer.checkpoint.track("finish.child", child)
        search_acc = ctx.search_accuracy(child)
        if finetune_epochs:  # with no finetune the recalibrated statistics are the deployed ones
            reset_bn_stats(child)
            optimizer = weight_optimizer(child, ctx.budget)
            steps = finetune_epochs * ctx.trainer.steps_per_epoch()
            final_lr = float(ctx.budget.get("lr_min", 0.0))
            schedule = WarmupCosine(optimizer, outcome.extra["fork_lr"], steps, final_lr=final_lr)
            step = plain_step(ctx.parallel(child), optimizer, ctx.trainer.loss, grad_clip(ctx.budget))
            ctx.trainer.run_phase("finetune", finetune_epochs, step, child, schedule, optimizer=optimizer)
        alpha = outcome.alpha
        return MethodResult(
            arch=outcome.arch,
            search_acc=search_acc,
            child=child,
            extra={
                "fixed_layers": {str(i): k for i, k in sorted(alpha.fixed.items())},
                "alpha_probs": alpha.probs().detach().tolist(),
                "alpha_lr": self.alpha_lr(),
                "paths_per_step": outcome.extra.get("paths_per_step", 1),
            },
        )

    def search_stage(self) -> SearchOutcome:
        """Warm-up and search phases; the outcome carries the lr at the fork (``fork_lr``)."""
        ctx, cfg = self.ctx, self.cfg
        search_epochs = self.epochs("search_epochs", minimum=1)
        finetune_epochs = self.epochs("finetune_epochs")
        warmup_epochs = int(cfg.get("alpha_warmup_epochs", 0))
        if not 0 <= warmup_epochs < search_epochs:
            raise UserError(
                f"method.alpha_warmup_epochs={warmup_epochs}: must be at least 0 and less than"
                f" search_epochs={search_epochs}"
            )
        # the cosine spans search and finetune: the fork stops it early (official code)
        paths = self.paths_per_step()
        s = start_search(self, search_epochs, finetune_epochs * ctx.trainer.steps_per_epoch(), paths)
        penalty = cfg.get("flops_penalty") or {}
        mflops = ctx.space.candidate_macs() / 1e6 if float(penalty.get("coef", 0.0)) > 0 else None
        estimator = ctx.estimator

        def penalty_grad(selection: Selection) -> Tensor | None:
            if mflops is None:
                return None
            coef, threshold = float(penalty["coef"]), float(penalty["threshold_mflops"])
            return flops_penalty_grad(s.arch, selection.info["sample"], mflops, coef, threshold)

        def on_search_epoch(epoch: int) -> dict[str, Any]:
            newly = early_fix(s.arch, float(cfg["early_fix_threshold"])) if estimator.learns_alpha else []
            return {"newly_fixed": newly, **estimator.on_epoch_start(epoch, search_epochs)}

        args = (s.trained, estimator, s.arch, s.sampler, ctx.device, ctx.trainer.loss, s.weight_opt)
        run_search_phase(ctx, "warmup", warmup_epochs, weight_step(*args, s.options), s)
        run_search_phase(
            ctx,
            "search",
            search_epochs - warmup_epochs,
            estimator_step(*args, s.alpha_opt, penalty_grad, s.options),
            s,
            on_search_epoch,
        )
        return SearchOutcome(s.supernet, s.arch.derive(), s.arch, {"fork_lr": s.schedule.lr(), "paths_per_step": paths})
