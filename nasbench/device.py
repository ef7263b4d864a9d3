"""Choosing the device: ``device=auto`` takes a GPU where there is one."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from nasbench.errors import UserError


def resolve_device(name: str, job: int | None = None) -> torch.device:
    """``auto``: a GPU where there is one; in sweep job ``job`` on a multi-GPU host, GPU job mod n."""
    name = str(name).strip().lower()
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", 0 if job is None else job % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device={name} asked for, but this machine has no CUDA GPU; use device=cpu or device=auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise UserError(f"unknown device {name!r}; choose one of: auto, cpu, cuda, cuda:N")


PRECISIONS = ("auto", "fp32", "bf16")
_AUTOCAST_DTYPE: torch.dtype | None = None
_COMPILE_CHILD = False


def configure(
    device: torch.device, precision: str = "fp32", compile_child: bool = False, cudnn_benchmark: bool = True
) -> str:
    """Speed settings: cudnn autotuning and TF32 matmuls on GPUs (results change by float
    rounding only), and the precision of training forwards. ``precision=auto``: bf16 autocast
    on a GPU that supports it (mixed precision: weights, optimizer state and the loss stay fp32),
    fp32 on the CPU (CPU bf16 is slower than fp32 on most CPUs). ``compile_child``: the
    stand-alone child's training forward goes through ``torch.compile`` (:func:`compiled`).
    ``cudnn_benchmark``: cudnn times its algorithms for every new convolution shape (fastest in a
    long run of fixed shapes; a supernet meets many shapes in its first epoch, each timed once).
    Returns the precision used."""
    global _AUTOCAST_DTYPE, _COMPILE_CHILD
    _COMPILE_CHILD = bool(compile_child)
    precision = str(precision).strip().lower()
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "bf16" if gpu_bf16 else "fp32"
    _AUTOCAST_DTYPE = torch.bfloat16 if precision == "bf16" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return precision


def autocast(device_type: str) -> AbstractContextManager:
    """The training forward's autocast context (nothing at fp32)."""
    if _AUTOCAST_DTYPE is None:
        return nullcontext()
    return torch.autocast(device_type, dtype=_AUTOCAST_DTYPE)


def precision() -> str:
    return "bf16" if _AUTOCAST_DTYPE is torch.bfloat16 else "fp32"


def compiled(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """What the stand-alone child's training step calls: ``torch.compile(model)`` with
    ``compile=true``, else ``model``. Only the child: a supernet changes its graph with every
    sampled path. Every method's finetune or retrain child and the bench's child floor get the
    same treatment, and summary.json records it (``compile``). Off by default: no GPU measurement
    has shown it to help yet (docs/benchmarks.md), and it costs a compilation per run."""
    return torch.compile(model) if _COMPILE_CHILD else model


def compile_child() -> bool:
    return _COMPILE_CHILD
