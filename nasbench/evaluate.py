"""Evaluation: accuracy of a network and BatchNorm recalibration.

BatchNorm recalibration (SPOS, Guo et al. ECCV 2020, Sec. 3.3): a path taken from a supernet
carries running statistics accumulated over every path; before a path is evaluated its running
statistics are reset and re-estimated from training batches in train mode (here as an exact
cumulative average, ``momentum=None``), with no weight update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

Forward = Callable[[Tensor], Tensor]


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reset_bn_stats(model: nn.Module) -> None:
    """Reset every BatchNorm's running mean and variance (DSNAS search-from-search fork)."""
    for bn in batch_norms(model):
        bn.reset_running_stats()


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_batches: int,
    device: torch.device,
    forward: Forward | None = None,
) -> None:
    """Re-estimate BatchNorm running statistics from ``num_batches`` training batches."""
    norms = batch_norms(model)
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    was_training = model.training
    model.train()
    run = forward or model
    for i, (x, _) in enumerate(batches):
        if i >= num_batches:
            break
        run(x.to(device, non_blocking=True))
    for bn, m in zip(norms, momenta):
        bn.momentum = m
    model.train(was_training)


@torch.no_grad()
def accuracy(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    forward: Forward | None = None,
    train_mode_switch: bool = True,
) -> tuple[float, int]:
    """(top-1 accuracy as a fraction, number of images) of ``model`` in eval mode.

    ``train_mode_switch=False`` for an exported program, whose mode was fixed at export.
    """
    was_training = model.training
    if train_mode_switch:
        model.eval()
    run = forward or model
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in batches:
        y = y.to(device, non_blocking=True)
        correct += (run(x.to(device, non_blocking=True)).argmax(1) == y).sum()
        seen += len(y)
    if train_mode_switch:
        model.train(was_training)
    return (correct.item() / seen if seen else float("nan")), seen
