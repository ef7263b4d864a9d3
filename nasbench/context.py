"""Everything a method's pipeline needs for one run, built once by the entry point."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasbench import distributed
from nasbench.budget import BudgetMeter
from nasbench.data import DataBundle
from nasbench.evaluate import accuracy, recalibrate_bn
from nasbench.records import RunRecord
from nasbench.spaces.base import SearchSpace
from nasbench.train import Trainer


@dataclass
class RunContext:
    space: SearchSpace
    data: DataBundle
    device: torch.device
    meter: BudgetMeter
    trainer: Trainer
    record: RunRecord
    seed: int
    budget: Mapping[str, Any]
    method_cfg: Mapping[str, Any]
    estimator: Any  # methods.estimators.base.Estimator; typed loosely: nasbench never imports methods
    channels_last: bool = True

    def generator(self, purpose: str) -> torch.Generator:
        """A CPU generator seeded by (seed, purpose): independent, reproducible streams."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(purpose.encode()))

    def place(self, model: nn.Module) -> nn.Module:
        """Move a network to the run's device (channels_last: 2-5x faster depthwise convs on CPU;
        not on the CPU for a space whose ``channels_last_on_cpu`` is False, darts)."""
        if self.channels_last and (self.device.type != "cpu" or self.space.channels_last_on_cpu):
            return model.to(self.device, memory_format=torch.channels_last)
        return model.to(self.device)

    def parallel(self, model: nn.Module, partial: bool = False) -> nn.Module:
        """What a training step runs: ``model`` under DistributedDataParallel in a distributed
        run (torchrun), else ``model`` itself (``partial``: a step may leave weights unused)."""
        return distributed.wrap(model, find_unused=partial)

    def search_accuracy(self, child: nn.Module, phase: str = "eval_search") -> float:
        """Accuracy of a child with inherited weights after BatchNorm recalibration (not counted
        in the run's device-hours: it is a measurement of the benchmark, not part of the method).
        A checkpoint unit: a resumed run reads the saved value (the child's recalibrated
        statistics matter only when it is deployed without a finetune, which then follows at once)."""

        def measure() -> float:
            with self.meter.phase(phase, counted=False):
                recalibrate_bn(
                    child, self.trainer.train_loader(augment=False), int(self.budget["bn_recal_batches"]), self.device
                )
                acc, _ = accuracy(child, self.trainer.test_loader(), self.device)
            return acc

        return self.trainer.checkpoint.once(f"accuracy:{phase}", measure)
