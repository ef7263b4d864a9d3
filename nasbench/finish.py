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
from nasbench.records import RunRecord
from nasbench.spaces.base import Arch


def export_child(record: RunRecord, child: nn.Module, shape: tuple[int, ...], meta: Mapping[str, Any]) -> nn.Module:
    """Write child.pt2 and child_state.pt from a CPU copy of ``child``; returns that copy, which
    stays on the CPU (params and MACs are counted on it) and shares no storage with ``child``."""
    cpu_child = copy.deepcopy(child).to("cpu", memory_format=torch.contiguous_format).eval()
    record.save_child(cpu_child, torch.rand(2, *shape), meta)
    return cpu_child


def load_deployed(record: RunRecord, device: torch.device) -> nn.Module:
    """The deployed model as a user loads it: child.pt2 read back from the run folder and moved to
    ``device``. Its tensors are its own: the in-memory exported program shares its parameters
    with the module it was exported from, and moving those to a GPU moved the exported copy's
    too (a crash seen on a GPU: the exported copy's weights had left the CPU)."""
    return torch.export.load(str(record.dir / "child.pt2")).module().to(device)


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
        meta = {"arch": ctx.space.encode(arch), "space": ctx.space.name, "input_shape": list(spec.shape)}
        exported = export_child(ctx.record, child, spec.shape, meta)
        params, macs = count_params(exported), count_macs(exported, torch.zeros(1, *spec.shape))
        deployed = load_deployed(ctx.record, ctx.device)
        final_acc, n_test = accuracy(deployed, ctx.trainer.test_loader(), ctx.device, train_mode_switch=False)
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
        "num_classes": spec.num_classes,
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
