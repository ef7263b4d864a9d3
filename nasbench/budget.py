"""The budget meter: what every phase of a run cost (README, "The run record": phases).

Per phase: wall seconds, device type and count, device-hours (wall x devices / 3600: a
distributed run counts every rank's device), peak memory (the largest over the ranks), images,
images per second, steps and epochs. Peak memory is measured, never estimated: on CUDA the caching
allocator's peak of allocated bytes since the phase began; on the CPU the process's peak
resident set size (VmHWM) in the phase, reset at the phase start through /proc/self/clear_refs.
The CPU figure includes the interpreter and libraries, so compare CPU phases by difference.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nasbench import distributed


def _proc_status_bytes(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def read_peak_rss() -> int | None:
    """The process's peak resident set since start or since :func:`reset_peak_rss`."""
    return _proc_status_bytes("VmHWM")


def current_rss_bytes() -> int | None:
    return _proc_status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the peak resident set (``echo 5 > /proc/self/clear_refs``); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory over a span of code, on the device the run trains on."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not reset_peak_rss():
            self.kind = "cpu_peak_rss_since_start"  # cannot reset: the process's lifetime peak

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        hwm = read_peak_rss()
        return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class PhaseRecord:
    name: str
    device: str
    num_devices: int
    counted: bool = True
    wall_s: float = 0.0
    device_hours: float = 0.0
    peak_mem_bytes: int = 0
    peak_mem_kind: str = ""
    epochs: int = 0
    steps: int = 0
    images: int = 0
    images_per_s: float = 0.0  # training images (over all ranks) per second of wall time

    def add_batch(self, images: int) -> None:
        self.steps += 1
        self.images += images


@dataclass
class BudgetMeter:
    """Collects one :class:`PhaseRecord` per phase of a run."""

    device: torch.device
    num_devices: int = 1
    phases: list[PhaseRecord] = field(default_factory=list)
    _open: list = field(default_factory=list, repr=False)  # the phases being measured, innermost last

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return "cpu"

    @contextmanager
    def phase(self, name: str, counted: bool = True, resume: dict | None = None) -> Iterator[PhaseRecord]:
        """Measure a phase. ``counted=False`` marks measurement overhead (evaluation) that the
        run reports but leaves out of ``total_device_hours``. ``resume``: the phase's record as a
        checkpoint saved it inside the phase; this part adds its wall time and may raise its peak."""
        record = PhaseRecord(**resume) if resume else PhaseRecord(name, self.device_name(), self.num_devices, counted)
        prior_wall, prior_peak = record.wall_s, record.peak_mem_bytes
        memory = PeakMemory(self.device)
        memory.start()
        start = time.perf_counter()
        self._open.append((record, memory, start, prior_wall, prior_peak))
        try:
            yield record
        except BaseException:
            self._close(over_ranks=False)  # no collective: a rank may be gone
            raise
        self._close(over_ranks=True)

    def _measure(self, over_ranks: bool) -> PhaseRecord:
        record, memory, start, prior_wall, prior_peak = self._open[-1]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        record.wall_s = prior_wall + time.perf_counter() - start
        record.device_hours = record.wall_s * self.num_devices / 3600.0
        record.images_per_s = record.images / record.wall_s if record.wall_s > 0 else 0.0
        peak = memory.peak()
        record.peak_mem_bytes = max(prior_peak, distributed.max_int(peak) if over_ranks else peak)
        record.peak_mem_kind = memory.kind
        return record

    def _close(self, over_ranks: bool) -> None:
        self.phases.append(self._measure(over_ranks))
        self._open.pop()

    def snapshot(self) -> dict | None:
        """The open phase's record as of now (what a checkpoint inside the phase saves; this
        process's peak memory only: rank 0 saves alone, so no collective)."""
        if not self._open:
            return None
        return asdict(self._measure(over_ranks=False))

    def restore(self, phases: list[dict]) -> None:
        """The finished phases of a checkpoint (resume)."""
        self.phases = [PhaseRecord(**p) for p in phases]

    def total_device_hours(self) -> float:
        return sum(p.device_hours for p in self.phases if p.counted)

    def peak_mem_bytes(self) -> int:
        return max((p.peak_mem_bytes for p in self.phases if p.counted), default=0)

    def as_dicts(self) -> list[dict]:
        return [asdict(p) for p in self.phases]
