"""The learning-rate schedule, BatchNorm recalibration, and the budget meter's measurements."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nasbench.budget import BudgetMeter
from nasbench.evaluate import recalibrate_bn, reset_bn_stats
from nasbench.train import WarmupCosine, weight_optimizer


def test_warmup_then_cosine_to_zero() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, base_lr=0.5, horizon_steps=110, warmup_steps=10, start_lr=0.0)
    lrs = [sched.lr()]
    for _ in range(110):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.25) and lrs[10] == pytest.approx(0.5)
    assert lrs[60] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[110] == pytest.approx(0.0, abs=1e-12)


def test_no_weight_decay_on_batchnorm_and_bias() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    opt = weight_optimizer(model, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4})
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}


def test_bn_recalibration_is_the_exact_mean_of_the_batches() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3))
    batches = [(torch.randn(5, 2, 4, 4) * 3 + 1, torch.zeros(5)) for _ in range(4)]
    model.eval()
    recalibrate_bn(model, batches, num_batches=3, device=torch.device("cpu"))
    with torch.no_grad():
        feats = [model[0](x) for x, _ in batches[:3]]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    assert not model.training  # mode restored
    assert model[1].momentum == 0.1
    reset_bn_stats(model)
    assert torch.equal(model[1].running_mean, torch.zeros(3))


def test_budget_meter_records_phases_and_real_peak_memory() -> None:
    meter = BudgetMeter(torch.device("cpu"))
    with meter.phase("small") as phase:
        torch.ones(1000)
        phase.add_batch(10)
    with meter.phase("big") as phase:
        block = torch.ones(300 * 2**20 // 4)  # 300 MiB, touched
        block += 1
        phase.epochs += 1
        del block
    with meter.phase("eval", counted=False):
        pass
    small, big, evaluation = meter.phases
    assert (small.steps, small.images) == (1, 10) and big.epochs == 1
    assert big.peak_mem_bytes - small.peak_mem_bytes > 250 * 2**20
    assert meter.peak_mem_bytes() == big.peak_mem_bytes
    assert big.device_hours == pytest.approx(big.wall_s / 3600)
    assert meter.total_device_hours() == pytest.approx(small.device_hours + big.device_hours)
    assert evaluation.counted is False
