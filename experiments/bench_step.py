"""One benchmark configuration in its own process (called by bench.py; prints one JSON line).

Memory is the peak over the timed steps of everything a training step holds: parameters,
gradients, optimizer state, activations. On CUDA: the allocator's peak of allocated bytes. On
the CPU: the process's peak resident set (VmHWM, reset before the model is built) minus the
resident set just before the model is built; a fresh process per configuration keeps one
configuration's freed memory from hiding another's.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

import cli  # noqa: F401
from methods.base import estimator_step
from methods.estimators.base import build_estimator
from nasbench.arch_params import ArchParameters
from nasbench.budget import current_rss_bytes, read_peak_rss, reset_peak_rss
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec
from nasbench.supernet import one_hot_rows
from nasbench.train import plain_step, weight_optimizer


def measure(job: dict) -> dict:
    device = torch.device(job["device"])
    spec = InputSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["spec"].items()})
    space = SPACES.get(job["space"])(job["preset"], spec)
    arch = tuple(job["arch"])
    torch.manual_seed(job["seed"])
    x = torch.rand(job["batch_size"], *spec.shape, device=device)
    y = torch.randint(spec.num_classes, (job["batch_size"],), device=device)
    fmt = torch.channels_last if job["channels_last"] else torch.contiguous_format
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    base = current_rss_bytes() or 0
    train = {"lr": 0.01, "momentum": 0.9, "weight_decay": 4e-5}
    loss_fn = torch.nn.CrossEntropyLoss()
    if job["config"] == "child":
        model = space.build_child(arch).to(device, memory_format=fmt)
        step = plain_step(model, weight_optimizer(model, train), loss_fn)
    else:
        model = space.build_supernet().to(device, memory_format=fmt)
        estimator = build_estimator({"name": job["config"]})
        # alpha peaked at `arch`: the estimator does all its work but samples the compared path
        params = ArchParameters(space.candidate_mask())
        with torch.no_grad():
            params.alpha.copy_(30.0 * one_hot_rows(torch.tensor(arch), space.max_candidates))
        if not estimator.learns_alpha:  # uniform sampling ignores alpha: fix every decision instead
            for i, k in enumerate(arch):
                params.fix(i, k)
        alpha_opt = torch.optim.Adam([params.alpha], lr=1e-3, betas=(0.5, 0.999))
        gen = torch.Generator().manual_seed(job["seed"])
        step = estimator_step(model, estimator, params, gen, device, loss_fn, weight_optimizer(model, train), alpha_opt)

    times = []
    for i in range(job["warmup"] + job["steps"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= job["warmup"]:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = (read_peak_rss() or 0) - base
    return {
        "config": job["config"],
        "step_ms": 1000 * statistics.median(times),
        "step_ms_min": 1000 * min(times),
        "peak_mem_bytes": int(peak),
    }


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
