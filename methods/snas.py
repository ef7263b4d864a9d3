"""SNAS: stochastic neural architecture search (Xie et al., ICLR 2019).

Single level (Sec. 2.3): alpha and the weights update from the same training batch and the same
backward; the default estimator is ``gumbel_softmax`` (every candidate runs, weighted by a
relaxed one-hot sample whose temperature anneals from 1 to 0.03). Two-stage: the argmax child
is retrained from scratch (Sec. 3.1).

Following the official code (SNAS-Series/SNAS train_search.py, model_search.py): alpha starts at
N(1, 0.01) (``--loc_mean 1 --loc_std 0.01``), its gradient norm is clipped at 10 before its step
(``alpha_grad_clip``), and the weights' at 5 (the budget's ``grad_clip``, shared by every method).

Resource constraint (Sec. 2.4), ``method.resource_lambda``: the published runs add
``resource_lambda * log_penalty`` with resource_lambda 1.5e-3 (README, ``--resource_efficient
--resource_lambda 1.5e-3 --log_penalty --method reparametrization``): per choice block, the mean
over params, MACs and memory access of log(sum_k Z_k R_k), a sum below 1 counted as 1 (a
constant); blocks of the same decision are averaged (the official code divides by the number of
normal and of reduction cells) and decisions summed. Z is the relaxed sample itself
(reparametrisation), so the penalty's gradient flows to alpha through it. Default 0 (off): the
penalty is a prior toward cheap cells that no other method in a comparison gets; 1.5e-3 is the
published setting.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from methods.alpha_search import AlphaSearch
from methods.base import METHODS
from methods.estimators.gumbel_softmax import GumbelSoftmaxEstimator
from methods.phases import SupernetSearch
from methods.steps import estimator_step
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.resources import block_resources
from nasbench.supernet import Selection
from nasbench.train import StepFn


def log_resource_penalty(z: Tensor, table: Tensor, decisions: list[int]) -> Tensor:
    """sum over decisions of the mean over their blocks of mean_r log(max'(sum_k Z_k R_bkr)),
    where a sum below 1 is replaced by the constant 1 (official ``clean_*[abs(...) < 1] = 1``)."""
    index = torch.tensor(decisions)
    per_block = (z[index].unsqueeze(-1) * table.to(z.dtype)).sum(1)  # blocks x resources
    clean = torch.where(per_block.abs() < 1, torch.ones_like(per_block), per_block)
    per_block_log = torch.log(clean.abs()).mean(-1)
    counts = torch.bincount(index, minlength=z.shape[0]).to(z.dtype)
    return (per_block_log / counts[index]).sum()


def resource_penalty_grad(
    arch: ArchParameters, selection: Selection, table: Tensor, decisions: list[int], lam: float
) -> Tensor:
    """The gradient in alpha of lam * log_resource_penalty(Z), Z rebuilt from the step's Gumbel
    noise and temperature (the same Z the forward used)."""
    alpha = arch.alpha.detach().clone().requires_grad_()
    log_probs = torch.log_softmax(alpha.masked_fill(~arch.mask, float("-inf")), dim=-1)
    z = torch.softmax((log_probs + selection.info["gumbel"]) / selection.info["temperature"], dim=-1)
    (grad,) = torch.autograd.grad(lam * log_resource_penalty(z, table, decisions), alpha)
    return grad


@METHODS.register("snas")
class SNAS(AlphaSearch):
    name = "snas"
    alpha_data = "train"

    @classmethod
    def check_estimator(cls, cfg, estimator) -> None:
        super().check_estimator(cfg, estimator)
        if float(cfg.get("resource_lambda", 0.0)) > 0 and not isinstance(estimator, GumbelSoftmaxEstimator):
            raise UserError(
                f"method.resource_lambda differentiates the relaxed sample Z; estimator {estimator.name} has none:"
                " use estimator=gumbel_softmax or method.resource_lambda=0"
            )

    def penalty(self, s: SupernetSearch) -> Callable[[Selection], Tensor] | None:
        lam = float(self.cfg.get("resource_lambda", 0.0))
        if lam <= 0:
            return None
        ctx = self.ctx
        example = torch.zeros(1, *ctx.space.inputs.shape, device=ctx.device)
        table, decisions = block_resources(s.supernet, example, s.arch.mask)
        return lambda selection: resource_penalty_grad(s.arch, selection, table, decisions, lam)

    def search_step(self, s: SupernetSearch) -> StepFn:
        ctx = self.ctx
        rest = (ctx.estimator, s.arch, s.sampler, ctx.device, ctx.trainer.loss)
        return estimator_step(s.trained, *rest, s.weight_opt, s.alpha_opt, self.penalty(s), s.options)
