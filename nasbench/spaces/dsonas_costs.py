"""Multiply-accumulates of DSO-NAS's blocks, and the penalty weights of its budget-aware variant.

Per block set (one in ``share``, one per block in ``full``) each op i has its own MACs (summed over
the blocks that use the set) and its output connection's 1x1 convolution has c^2 * h * w; a
reduction connection has its stride-2 convolution's. These give ``candidate_macs`` (an additive
approximation: ``keep`` of op i's output connection carries op i and its 1x1 convolution, input
connections nothing) and the FLOPs-adaptive penalty of the paper (Sec. 3.4: gamma of a block
scaled by the FLOPs of its live ops over the block's full FLOPs). The official code
(Cifar/core/optimizer_split_flops.py) scales gamma by a count instead: (live ops + 1) / (all + 1),
where ops are the two separable convolutions of every level (level 1's always counted) and the
output 1x1 convolutions; ``adaptive: count`` reproduces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nasbench.flops import count_macs
from nasbench.spaces.dsonas_blocks import OP_NAMES, conv_bn_relu, make_op

ADAPTIVE = ("none", "flops", "count")


def op_macs(c: int, side: int) -> list[int]:
    """MACs of each op of ``OP_NAMES`` on a (c, side, side) input."""
    x = torch.zeros(1, c, side, side)
    return [count_macs(make_op(name, c).eval(), x) for name in OP_NAMES]


def reduction_macs(c: int, side: int) -> list[int]:
    """MACs of a reduction block's 1x1 and 3x3 stride-2 Conv-BN-ReLU from c to 2c channels."""
    x = torch.zeros(1, c, side, side)
    return [count_macs(conv_bn_relu(c, 2 * c, k, 2).eval(), x) for k in (1, 3)]


@dataclass
class SetCosts:
    """MACs of one block set's ops and output convolutions, summed over the blocks using it."""

    start: int
    ops: list[float]
    convs: list[float]

    def total(self) -> float:
        return sum(self.ops) + sum(self.convs)


def set_costs(layout: Sequence[tuple[str, int]], stage_blocks: Sequence[int], channels: int, side: int, plan) -> dict:
    """Per normal set start, its :class:`SetCosts`; per reduction start, its two convolutions' MACs."""
    sets: dict[int, SetCosts] = {}
    reductions: dict[int, list[int]] = {}
    kinds = iter(layout)
    c = channels
    for s, count in enumerate(stage_blocks):
        per_op = op_macs(c, side)
        conv = c * c * side * side
        for _ in range(count):
            _, start = next(kinds)
            costs = sets.setdefault(start, SetCosts(start, [0.0] * plan.num_ops, [0.0] * plan.num_ops))
            for i in range(plan.num_ops):
                costs.ops[i] += per_op[i % plan.n]
                costs.convs[i] += conv
        if s < len(stage_blocks) - 1:
            _, start = next(kinds)
            reductions[start] = reduction_macs(c, side)
            c, side = 2 * c, (side + 1) // 2
    return {"sets": sets, "reductions": reductions}


def penalty_weights(space, live: Tensor, mode: str) -> Tensor:
    """Per decision, the factor of gamma: 1 (``none``; reduction connections always, as the official
    code's two-entry lambdas), live FLOPs over full FLOPs of the decision's block set (``flops``),
    or the official code's count ratio (``count``). ``live``: (decisions,) bool, lambda > 0 and
    not pruned."""
    weights = torch.ones(space.num_decisions, dtype=torch.float64)
    if mode == "none":
        return weights
    plan = space.plan
    bits = [int(v) for v in live.tolist()]
    for start, costs in space.costs()["sets"].items():
        block = bits[start : start + plan.size]
        if mode == "flops":
            alive = plan.live_ops(block)
            spent = sum(costs.ops[i] + costs.convs[i] * block[plan.outputs[i]] for i in range(plan.num_ops) if alive[i])
            ratio = spent / costs.total()
        else:
            convs = [i for i in range(plan.num_ops) if OP_NAMES[i % plan.n].startswith("sep_conv")]
            fed = sum(any(k is None or block[k] for _, k in plan.inputs[i]) for i in convs)
            outputs = sum(block[k] for k in plan.outputs)
            ratio = (fed + outputs + 1) / (len(convs) + plan.num_ops + 1)
        weights[start : start + plan.size] = ratio
    return weights
