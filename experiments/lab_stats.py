"""The estimator lab's measurements: per-sample alpha gradients of an estimator on a
:class:`~lab_exact.LabProblem`, and how their mean compares with a reference gradient.

One sample is one search step's alpha signal as the pipeline computes it (methods/steps.py):
sample, one forward of the batch, one backward of its loss (every weight gradient too, as a
single-level step), then ``alpha_grad`` or the gradient autograd left on alpha. A reward
estimator (REINFORCE) gets R = -L(Z) on the same batch, so that it targets the same objective
as the others (run.py's REINFORCE rewards held-out accuracy instead), and runs no backward.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from lab_exact import LabProblem
from methods.estimators.base import Estimator
from methods.steps import _signal_leaves
from nasbench.supernet import Selection


@dataclass
class Samples:
    """N per-sample gradients over the compared entries, and what each cost."""

    grads: Tensor  # (N, D) float64
    seconds: list[float]
    ops_run: float  # mean ops run per free decision per sample (forward), probes counted apart
    ops_probed: float  # mean ops recomputed in the backward per free decision (binary gates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_sample(estimator: Estimator, problem: LabProblem, generator: torch.Generator) -> tuple[Tensor, int, int]:
    """(alpha gradient, ops run, ops probed) of one step of ``estimator`` on the problem."""
    arch, net = problem.arch, problem.supernet
    net.zero_grad(set_to_none=True)
    arch.alpha.grad = None
    for own in estimator.arch_parameters():
        own.grad = None
    selection = estimator.sample(arch, generator, problem.device)
    if estimator.needs_reward:
        with torch.no_grad():
            loss = problem.loss_fn(net(problem.x, selection), problem.y)
        selection.info["reward"] = -float(loss)
    else:
        loss = problem.loss_fn(net(problem.x, selection), problem.y)
        loss.backward(inputs=[*net.parameters(), *_signal_leaves(arch, selection, estimator)])
    grad = estimator.alpha_grad(arch, selection)
    if grad is None:
        grad = arch.alpha.grad if arch.alpha.grad is not None else torch.zeros_like(arch.alpha)
    grad = grad.detach().cpu().to(torch.float64).clone()
    for i in arch.fixed:
        grad[i] = 0.0
    ran = sum(len(selection.active[i]) for i in problem.free)
    probes = selection.probe
    probed = sum(len(probes[i] or []) for i in problem.free) if probes is not None else 0
    return grad, ran, probed


def draw(estimator: Estimator, problem: LabProblem, n: int, seed: int, burn_in: int = 10) -> Samples:
    """``n`` independent samples (after ``burn_in`` discarded ones: a moving-average baseline
    starts at its first reward, which would zero the first sample's gradient). Give a freshly
    built estimator to each call: its state (a baseline) is what the burn-in leaves."""
    generator = torch.Generator().manual_seed(seed)
    keep = problem.entries()
    for _ in range(burn_in):
        one_sample(estimator, problem, generator)
    rows, seconds, ran, probed = [], [], 0, 0
    free = max(1, len(problem.free))
    for _ in range(n):
        _sync(problem.device)
        start = time.perf_counter()
        grad, r, p = one_sample(estimator, problem, generator)
        _sync(problem.device)
        seconds.append(time.perf_counter() - start)
        rows.append(grad[keep])
        ran, probed = ran + r, probed + p
        if not estimator.stochastic and len(rows) == 3 and all(torch.equal(rows[0], row) for row in rows[1:]):
            break  # a deterministic estimator (DARTS's softmax): its every sample is this one
    taken = len(rows)
    grads = torch.stack(rows)
    if taken < n:
        grads = grads[:1].expand(n, -1).clone()
    return Samples(grads, seconds, ran / (taken * free), probed / (taken * free))


def single_path_seconds(problem: LabProblem, path: tuple[int, ...], repeats: int) -> float:
    """Median seconds of one forward and backward of one path (the cost unit of the lab)."""
    times = []
    for _ in range(repeats):
        problem.supernet.zero_grad(set_to_none=True)
        _sync(problem.device)
        start = time.perf_counter()
        problem.loss_fn(problem.supernet(problem.x, Selection.single_path(path)), problem.y).backward()
        _sync(problem.device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def cosine(a: Tensor, b: Tensor) -> float:
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else float("nan")


def compare(grads: Tensor, reference: Tensor, bootstrap: int = 200, seed: int = 0) -> dict[str, float]:
    """How the mean of ``grads`` (N, D) stands against ``reference`` (D,), with standard errors.

    - ``cos``: cosine of the mean to the reference; ``rel_err``: |mean - ref| / |ref|;
    - ``rel_bias``: the same with the noise of the mean taken out, sqrt(max(0, |mean - ref|^2 -
      tr(S)/N)) / |ref| (S the per-sample covariance; an unbiased estimate of |E g - ref|^2
      before the root);
    - ``rel_std``: sqrt(tr S) / |ref|, the noise of one sample against the signal;
    - ``*_se``: bootstrap standard errors over the samples (``bootstrap`` resamples).
    """
    n = grads.shape[0]
    ref_norm = float(reference.norm())
    if ref_norm == 0.0:  # nothing to be relative to (a relaxation whose gradient vanishes here)
        nan = float("nan")
        return {"cos": nan, "rel_err": nan, "rel_bias": nan, "rel_std": nan, "samples": n}

    def stats(g: Tensor) -> tuple[float, float, float, float]:
        mean = g.mean(0)
        trace = float(g.var(0, unbiased=True).sum()) if g.shape[0] > 1 else 0.0
        err2 = float((mean - reference).pow(2).sum())
        bias = math.sqrt(max(0.0, err2 - trace / g.shape[0])) / ref_norm
        return cosine(mean, reference), math.sqrt(err2) / ref_norm, bias, math.sqrt(trace) / ref_norm

    cos, rel_err, rel_bias, rel_std = stats(grads)
    out = {"cos": cos, "rel_err": rel_err, "rel_bias": rel_bias, "rel_std": rel_std, "samples": n}
    if bootstrap > 0 and n > 1:
        gen = torch.Generator().manual_seed(seed)
        boot = torch.tensor([stats(grads[torch.randint(n, (n,), generator=gen)]) for _ in range(bootstrap)])
        for name, column in zip(("cos", "rel_err", "rel_bias", "rel_std"), boot.T):
            out[f"{name}_se"] = float(column.std(unbiased=True))
    return out


def error_curve(grads: Tensor, reference: Tensor) -> list[dict[str, float]]:
    """Relative error of the mean of n samples, n = 1, 2, 4, ..., over the disjoint chunks of
    ``grads`` (mean and standard error over chunks): 1/sqrt(n) for an unbiased estimator, a
    floor at its bias for a biased one."""
    ref_norm = float(reference.norm())
    rows, n = [], 1
    while n <= grads.shape[0]:
        chunks = grads[: (grads.shape[0] // n) * n].reshape(-1, n, grads.shape[1]).mean(1)
        errors = (chunks - reference).norm(dim=1) / ref_norm
        se = float(errors.std(unbiased=True)) / math.sqrt(len(errors)) if len(errors) > 1 else float("nan")
        rows.append({"n": n, "rel_err": float(errors.mean()), "rel_err_se": se, "chunks": len(errors)})
        n *= 2
    return rows
