"""One benchmark configuration in its own process (called by bench.py; prints one JSON line).

Timing: every step is timed (a GPU is synchronised around it); the figure is the median over
windows of ``alpha_every`` consecutive steps (the method's period: ProxylessNAS's alpha step
every 5 weight steps counts once per window), divided by the window's length; the mean is
reported beside it. The time ratio to the child comes from a second, paired measurement in the
same process: a period of child steps, a period of the method's steps, alternating.

Memory is the peak over the timed steps of everything a training step holds: parameters,
gradients, optimizer state, activations. On CUDA: the allocator's peak of allocated bytes. On
the CPU: the process's peak resident set (VmHWM, reset before the model is built) minus the
resident set just before the model is built; a fresh process per configuration keeps one
configuration's freed memory from hiding another's.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time

import torch
from omegaconf import OmegaConf

from cli import CONF_DIR
from methods.base import METHODS
from methods.dsnas import resolve_paths
from methods.estimators.base import build_estimator
from methods.phases import step_options
from methods.steps import bilevel_step, estimator_step, held_out_alpha_step, weight_step
from nasbench.arch_params import ArchParameters
from nasbench.budget import current_rss_bytes, read_peak_rss, reset_peak_rss
from nasbench.device import configure
from nasbench.provenance import set_threads
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec
from nasbench.supernet import one_hot_rows
from nasbench.train import plain_step, weight_optimizer


def method_config(method: str) -> tuple[dict, dict]:
    """The method's shipped config (without its defaults list) and its default estimator's config."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "method" / f"{method}.yaml"))
    estimator_name = next(v for d in cfg.pop("defaults") for k, v in d.items() if "estimator" in k)
    estimator = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "estimator" / f"{estimator_name}.yaml"))
    return cfg, estimator


def method_step(
    method: str,
    estimator_cfg: dict | None,
    model: torch.nn.Module,
    space: object,
    arch: tuple[int, ...],
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    loss_fn: torch.nn.Module,
    train: dict,
    seed: int,
    method_overrides: dict | None = None,
):
    """The search step of ``method`` as its pipeline builds it (``estimator_cfg``, or None for its
    default estimator; single level, bilevel every ``alpha_every`` steps, or weights only), forced
    onto ``arch``: alpha is peaked at it, so the estimator does all its work but samples the
    compared path. The held-out batch of bilevel methods is the same batch. A plug-in estimator's
    config names its ``module``, imported here (its folder on PYTHONPATH, as for run.py).
    ``method_overrides`` replace keys of the method's config (a row's ``@key:value``)."""
    method_cfg, default_estimator = method_config(method)
    method_cfg.update(method_overrides or {})
    estimator = build_estimator(estimator_cfg or default_estimator)
    method_cls = METHODS.get(method)
    method_cls.bind_estimator(method_cfg, estimator, space, device)
    # the method's own step options: DSNAS's paths per step, which weights move when unsampled
    options = step_options(method_cfg, resolve_paths(method_cfg.get("paths_per_step", 1), x.shape[0]))
    params = ArchParameters(space.candidate_mask())
    with torch.no_grad():
        params.alpha.copy_(30.0 * one_hot_rows(torch.tensor(arch), space.max_candidates))
    if not estimator.learns_alpha:  # uniform sampling ignores alpha: fix every decision instead
        for i, k in enumerate(arch):
            params.fix(i, k)
    estimator.on_epoch_start(0, 1)
    alpha_opt = torch.optim.Adam([params.alpha, *estimator.arch_parameters()], lr=1e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    args = (model, estimator, params, gen, device, loss_fn)
    weight_opt = weight_optimizer(model, train)
    if hasattr(method_cls, "bench_state"):  # a method that owns its architecture state and update
        alpha_opt = method_cls.bench_state(method_cfg, space, params, weight_opt)
    if method_cls.alpha == "none":
        return weight_step(*args, weight_opt, options)
    if getattr(method_cls, "alpha_data", "train") == "train":
        return estimator_step(*args, weight_opt, alpha_opt, options=options)
    held_out = itertools.repeat((x, y))
    alpha_step = held_out_alpha_step(*args, alpha_opt)
    return bilevel_step(*args, weight_opt, alpha_step, held_out, alpha_every(method), options)


def alpha_every(method: str) -> int:
    """The method's period in weight steps (1 unless it takes an alpha step every k steps)."""
    if method == "child":
        return 1
    cfg = OmegaConf.load(CONF_DIR / "method" / f"{method}.yaml")
    return max(1, int(cfg.get("alpha_every", 1)))


def timed(step, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Seconds of one step (a GPU synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def per_step(times: list[float], period: int) -> tuple[float, float]:
    """(median over whole periods of the mean step, mean step), in milliseconds."""
    windows = [statistics.mean(times[i : i + period]) for i in range(0, len(times), period)]
    return 1000 * statistics.median(windows), 1000 * statistics.mean(times)


def measure(job: dict) -> dict:
    """Peak memory and time of the configuration alone; then, for a search step, time again
    alternating step by step with the child of the same architecture built in the same process
    (``child_step_ms``): a slowdown of the machine hits both sides of the ratio alike."""
    set_threads(job.get("threads"))
    device = torch.device(job["device"])
    precision = configure(device, job.get("precision", "auto"), job.get("compile", False))  # cudnn, bf16, compile
    spec = InputSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["spec"].items()})
    space = SPACES.get(job["space"])(job["preset"], spec)
    arch = tuple(job["arch"])
    torch.manual_seed(job["seed"])
    x = torch.rand(job["batch_size"], *spec.shape, device=device)
    y = torch.randint(spec.num_classes, (job["batch_size"],), device=device)
    cpu_ok = device.type != "cpu" or space.channels_last_on_cpu  # as RunContext.place
    fmt = torch.channels_last if job["channels_last"] and cpu_ok else torch.contiguous_format
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    base = current_rss_bytes() or 0
    train = {"lr": 0.01, "momentum": 0.9, "weight_decay": 4e-5}
    loss_fn = torch.nn.CrossEntropyLoss()

    one_stage = job["config"] != "child" and METHODS.get(job.get("method", job["config"])).one_stage

    def child_step():
        # the paired floor is the child of the network the method searches (darts: DSNAS's is the
        # evaluation network's size, the others' the search network's)
        net = space.build_supernet(one_stage=True) if one_stage else None
        child = space.build_child(arch, net).to(device, memory_format=fmt)
        return plain_step(child, weight_optimizer(child, train), loss_fn)

    if job["config"] == "child":
        step = child_step()
    else:
        method = job.get("method", job["config"])
        options = (method_config(method)[0].get("space_options") or {}).get(job["space"]) or {}
        if options:  # the network the method's runs search in (EnTranNAS: feature sharing)
            space = SPACES.get(job["space"])({**job["preset"], **options}, spec)
        # the supernet the method's runs search in (darts: DSNAS's one-stage network is larger)
        model = space.build_supernet(one_stage=one_stage).to(device, memory_format=fmt)
        step = method_step(
            method,
            job.get("estimator"),
            model,
            space,
            arch,
            x,
            y,
            device,
            loss_fn,
            train,
            job["seed"],
            job.get("method_overrides"),
        )
    period = alpha_every(job.get("method", job["config"]))
    steps = period * max(1, -(-job["steps"] // period))  # whole periods
    times = [timed(step, x, y, device) for _ in range(job["warmup"] + steps)][job["warmup"] :]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = (read_peak_rss() or 0) - base
    step_ms, step_ms_mean = per_step(times, period)
    result = {
        "config": job["config"],
        "step_ms": step_ms,
        "step_ms_mean": step_ms_mean,
        "peak_mem_bytes": int(peak),
        "precision": precision,
        "threads": torch.get_num_threads(),
    }
    if job.get("paired", True) and job["config"] != "child":
        floor = child_step()
        for _ in range(job["warmup"]):
            floor(x, y)
        mine, theirs = [], []
        for _ in range(steps // period):
            theirs.extend(timed(floor, x, y, device) for _ in range(period))
            mine.extend(timed(step, x, y, device) for _ in range(period))
        result["paired_step_ms"], _ = per_step(mine, period)
        result["child_step_ms"], _ = per_step(theirs, 1)
    return result


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
