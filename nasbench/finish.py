"""Finishing a run the same way for every method: export, final evaluation, summary.

The deployed model is ``child.pt2``; ``final_acc`` is measured by running that exported program
on the test set, so the number in summary.json is the accuracy of the file a user deploys.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nasbench.context import RunContext
from nasbench.evaluate import accuracy
from nasbench.flops import count_macs, count_params
from nasbench.spaces.base import Arch


def finish_run(
    ctx: RunContext,
    arch: Arch,
    search_acc: float,
    child: nn.Module,
    identity: Mapping[str, Any],
    extra: Mapping[str, Any],
    started: float,
) -> dict[str, Any]:
    """Export ``child``, evaluate the export, write summary.json; returns the summary."""
    spec = ctx.space.inputs
    with ctx.meter.phase("export", counted=False):
        cpu_child = copy.deepcopy(child).to("cpu", memory_format=torch.contiguous_format).eval()
        example = torch.rand(2, *spec.shape)
        meta = {"arch": ctx.space.encode(arch), "space": ctx.space.name, "input_shape": list(spec.shape)}
        program = ctx.record.save_child(cpu_child, example, meta)
        deployed = program.module().to(ctx.device)
        final_acc, n_test = accuracy(deployed, ctx.trainer.test_loader(), ctx.device, train_mode_switch=False)
        params, macs = count_params(cpu_child), count_macs(cpu_child, torch.zeros(1, *spec.shape))
    summary = {
        **identity,
        "status": "complete",
        "arch": ctx.space.encode(arch),
        "arch_ops": ctx.space.describe(arch),
        "search_acc": search_acc,
        "final_acc": final_acc,
        "accuracy_unit": "fraction",
        "test_images": n_test,
        "params": params,
        "flops": macs,
        "flops_unit": "multiply-accumulates per image",
        "input_shape": list(spec.shape),
        "phases": ctx.meter.as_dicts(),
        "total_device_hours": ctx.meter.total_device_hours(),
        "peak_mem_bytes": ctx.meter.peak_mem_bytes(),
        "device": ctx.meter.device_name(),
        "num_devices": ctx.meter.num_devices,
        "wall_s": time.perf_counter() - started,
        "torch": torch.__version__,
        "extra": dict(extra),
    }
    ctx.record.write_summary(summary)
    return summary
