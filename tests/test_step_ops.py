"""No estimator runs an op it does not need: the profiler's op counts of one training step.

A single-path search step forced onto an architecture must run the same convolutions and
BatchNorms, forward and backward, as the stand-alone child of that architecture; DSNAS adds one
inner product per choice layer (its credit) and no full-size multiply; uniform sampling adds
nothing; an estimator that runs every candidate runs each candidate exactly once.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from conftest import tiny_space
from methods.estimators.base import build_estimator
from methods.steps import estimator_step, weight_step
from nasbench.arch_params import ArchParameters
from nasbench.supernet import one_hot_rows
from nasbench.train import plain_step, weight_optimizer

TRAIN = {"lr": 0.01, "momentum": 0.9, "weight_decay": 4e-5}
HEAVY = (
    "aten::convolution",
    "aten::convolution_backward",
    "aten::native_batch_norm",
    "aten::native_batch_norm_backward",
    "aten::avg_pool2d",
    "aten::max_pool2d_with_indices",
)


def op_counts(step, x, y) -> Counter:
    step(x, y)  # warm-up: lazily created optimizer state
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(x, y)
    return Counter({e.key: e.count for e in prof.key_averages()})


def search_step(space, arch, estimator_name: str):
    torch.manual_seed(0)
    supernet = space.build_supernet()
    estimator = build_estimator({"name": estimator_name})
    estimator.on_epoch_start(0, 1)
    params = ArchParameters(space.candidate_mask())
    with torch.no_grad():  # alpha peaked at arch: the sampled path is arch's
        params.alpha.copy_(40.0 * one_hot_rows(torch.tensor(arch), space.max_candidates))
    if not estimator.learns_alpha:
        for i, k in enumerate(arch):
            params.fix(i, k)
    weights = weight_optimizer(supernet, TRAIN)
    loss = torch.nn.CrossEntropyLoss()
    args = (supernet, estimator, params, torch.Generator().manual_seed(0), torch.device("cpu"), loss, weights)
    if estimator.learns_alpha:
        return estimator_step(*args, torch.optim.Adam([params.alpha], lr=1e-3)), estimator
    return weight_step(*args), estimator


@pytest.mark.parametrize("space_name", ["shufflenet", "nb201"])
@pytest.mark.parametrize("estimator_name", ["dsnas", "uniform", "gumbel_st"])
def test_single_path_step_runs_the_childs_ops(space_name: str, estimator_name: str) -> None:
    space = tiny_space(space_name)
    arch = space.sample(torch.Generator().manual_seed(3))
    x = torch.rand(16, *space.inputs.shape)
    y = torch.randint(space.inputs.num_classes, (16,))
    torch.manual_seed(0)
    child = space.build_child(arch)
    child_ops = op_counts(plain_step(child, weight_optimizer(child, TRAIN), torch.nn.CrossEntropyLoss()), x, y)
    step, estimator = search_step(space, arch, estimator_name)
    ops = op_counts(step, x, y)
    assert estimator.single_path
    assert child_ops["aten::convolution"] > 0
    for name in HEAVY:
        assert ops[name] == child_ops[name], (name, ops[name], child_ops[name])
    if estimator_name == "dsnas":
        # one credit per choice block by its active op's kind (nasbench/credit.py): a dot over
        # the output or input, two C-length dots from an affine BatchNorm's gradients, none for 0
        dots = {"output": 1, "linear": 1, "batchnorm": 2, "zero": 0}
        blocks = space.build_supernet().choice_blocks()
        expected = sum(dots[getattr(b.candidates[arch[b.decision]], "credit_kind", "output")] for b in blocks)
        assert ops["aten::dot"] == expected
        assert ops["aten::mul"] <= child_ops["aten::mul"] + 4  # the alpha gradient's few small ones
    else:
        assert ops["aten::dot"] == 0


def test_every_candidate_estimator_runs_each_candidate_once() -> None:
    """SNAS (Gumbel-softmax) needs every candidate of every layer, forward and backward: the
    step's convolutions are the sum over layers of all candidates', once each."""
    space = tiny_space("shufflenet")
    arch = space.sample(torch.Generator().manual_seed(3))
    x = torch.rand(16, *space.inputs.shape)
    y = torch.randint(space.inputs.num_classes, (16,))
    step, estimator = search_step(space, arch, "gumbel_softmax")
    assert not estimator.single_path
    ops = op_counts(step, x, y)
    torch.manual_seed(0)
    counts = []
    for k in range(space.max_candidates):  # every layer at candidate k, as a child
        child = space.build_child(tuple(k for _ in arch))
        counts.append(op_counts(plain_step(child, weight_optimizer(child, TRAIN), torch.nn.CrossEntropyLoss()), x, y))
    # the stem and head run once; every choice layer runs all of its candidates once
    stem_head = _non_choice_convolutions(space)
    layer_total = sum(c["aten::convolution"] - stem_head for c in counts)
    assert ops["aten::convolution"] == stem_head + layer_total
    assert ops["aten::convolution_backward"] == ops["aten::convolution"]


def _non_choice_convolutions(space) -> int:
    supernet = space.build_supernet()
    inside = {id(m) for block in supernet.choice_blocks() for m in block.modules()}
    return sum(1 for m in supernet.modules() if isinstance(m, torch.nn.Conv2d) and id(m) not in inside)
