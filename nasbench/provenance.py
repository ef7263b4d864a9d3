"""Where and with what a run was made, for summary.json.

A run's numbers depend on more than its configuration: the same seed gave another architecture
with 1 torch thread than with 2 on the same CPU (float sums reduce in another order), and other
CPUs or GPUs change the kernels again. So every record says which code (git commit, and whether
the tree had uncommitted changes), which torch, how many intra-op threads, which processor and
which host made it. ``threads`` applies the ``threads=`` key of a run (None: torch's own choice,
one per physical core by default, or ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from nasbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def set_threads(threads: int | str | None) -> int:
    """Apply ``threads=`` (None or "auto": leave torch's choice) and return the count in use."""
    if threads is not None and str(threads).strip().lower() not in ("", "auto", "none", "null"):
        try:
            n = int(threads)
        except (TypeError, ValueError):
            n = 0
        if n < 1 or str(n) != str(threads).strip():
            raise UserError(f"threads={threads}: give a whole number of at least 1, or leave it unset (torch's choice)")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """The project's commit and whether its tracked files differ from it (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux, else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device) -> dict[str, Any]:
    """The provenance block of summary.json."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        **git_state(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if gpu else None,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "gpu": gpu,
        "host": socket.gethostname(),
        "python": platform.python_version(),
    }
