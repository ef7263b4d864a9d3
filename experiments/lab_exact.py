"""The estimator lab's ground truth: a supernet small enough that every path can be run.

A :class:`LabProblem` is a supernet with fixed weights, one fixed batch, and alpha whose free
decisions (a few choice layers; every other decision fixed at a reference op, ``arch.fixed``)
span few enough paths to enumerate. The search objective every single-path estimator targets
(DSNAS Sec. 3, Eq. 3; SNAS Eq. 2 as its temperature goes to 0) is

    J(alpha) = E_{Z ~ p_alpha}[L(Z)] = sum_Z prod_i p_i(Z_i) L(Z),

with L(Z) the loss of path Z on the batch. L does not depend on alpha, so one forward per path
gives J and its exact gradient at any alpha: dJ/dalpha_ik = sum_Z P(Z) L(Z) (1[Z_i = k] - p_ik).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.supernet import Selection, Supernet

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LabProblem:
    """What every estimator of the lab is held against: fixed weights, one batch, the paths."""

    supernet: Supernet
    arch: ArchParameters
    x: Tensor
    y: Tensor
    loss_fn: LossFn
    device: torch.device
    free: list[int]

    def candidates(self, decision: int) -> list[int]:
        if decision in self.arch.fixed:
            return [self.arch.fixed[decision]]
        return torch.nonzero(self.arch.mask[decision]).flatten().tolist()

    def paths(self) -> list[tuple[int, ...]]:
        """Every architecture the free decisions span (the fixed ones at their op)."""
        rows = [self.candidates(i) for i in range(self.arch.alpha.shape[0])]
        return [tuple(p) for p in itertools.product(*rows)]

    def entries(self) -> Tensor:
        """(decisions x candidates) bool: the entries of alpha the lab compares (free, unmasked)."""
        keep = self.arch.mask.clone()
        for i in range(keep.shape[0]):
            if i not in self.free:
                keep[i] = False
        return keep

    @torch.no_grad()
    def path_loss(self, path: Sequence[int]) -> float:
        """L(Z): the batch's loss on one path (the supernet in its current mode, as search runs it)."""
        return float(self.loss_fn(self.supernet(self.x, Selection.single_path(path)), self.y))


def fix_all_but(arch: ArchParameters, free: Sequence[int], reference: Sequence[int]) -> None:
    """Fix every decision outside ``free`` at ``reference``'s op (its alpha row stops mattering)."""
    for i in range(arch.alpha.shape[0]):
        if i not in free:
            arch.fix(i, int(reference[i]))


def enumerate_losses(problem: LabProblem, max_paths: int) -> tuple[Tensor, Tensor]:
    """(paths x free) long tensor of the free decisions' ops, and (paths,) float64 L(Z)."""
    paths = problem.paths()
    if len(paths) > max_paths:
        raise UserError(
            f"the free decisions span {len(paths)} paths, more than max_paths={max_paths}: free fewer decisions"
            " (free=2) or raise max_paths"
        )
    ops = torch.tensor([[p[i] for i in problem.free] for p in paths], dtype=torch.long)
    losses = torch.tensor([problem.path_loss(p) for p in paths], dtype=torch.float64)
    return ops, losses


def expected_loss(alpha: Tensor, mask: Tensor, free: Sequence[int], ops: Tensor, losses: Tensor) -> Tensor:
    """J(alpha) = sum_Z prod_{i free} p_i(Z_i) L(Z), in float64, differentiable in ``alpha``."""
    logits = alpha.to(torch.float64).masked_fill(~mask, float("-inf"))
    log_p = torch.log_softmax(logits, dim=-1)
    log_path = torch.zeros(ops.shape[0], dtype=torch.float64)
    for column, i in enumerate(free):
        log_path = log_path + log_p[i, ops[:, column]]
    return (log_path.exp() * losses).sum()


def exact_gradient(alpha: Tensor, mask: Tensor, free: Sequence[int], ops: Tensor, losses: Tensor) -> Tensor:
    """dJ/dalpha (float64, alpha's shape; zero outside the free, unmasked entries)."""
    a = alpha.detach().to(torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(expected_loss(a, mask, free, ops, losses), a)
    return grad.masked_fill(~mask, 0.0)
