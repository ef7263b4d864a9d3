"""Choosing the device: ``device=auto`` takes a GPU where there is one."""

from __future__ import annotations

import torch

from nasbench.errors import UserError


def resolve_device(name: str) -> torch.device:
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
