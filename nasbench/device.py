"""Choosing the device: ``device=auto`` takes a GPU where there is one."""

from __future__ import annotations

import torch

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


def configure(device: torch.device) -> None:
    """Speed settings that do not change results beyond float rounding."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
