"""Running one benchmark configuration in a process of its own (experiments/bench_step.py), so
that nothing is left behind: the child dies with the bench (Linux ``PR_SET_PDEATHSIG``), even
when the bench is killed with SIGKILL, and a configuration that fails or runs past the bench's
time cap becomes a row with a one-line error instead of ending the bench."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

STEP_SCRIPT = Path(__file__).with_name("bench_step.py")


class JobFailed(Exception):
    """A configuration that did not give a measurement; the message is one line."""


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGKILL when the bench's thread ends (on
    Linux; elsewhere nothing, and a stop of the bench's process group still reaches it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def run_job(job: dict, timeout: float | None) -> dict:
    """Measure ``job`` in a fresh process; raise :class:`JobFailed` with its last error line."""
    proc = subprocess.Popen(
        [sys.executable, str(STEP_SCRIPT), json.dumps(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise JobFailed("stopped while measuring: the bench's time cap (max_minutes) ran out") from None
    except BaseException:  # Ctrl-C, SIGTERM: the child goes with the bench
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()] or [f"exit status {proc.returncode}"]
        raise JobFailed(lines[-1].strip())
    return json.loads(out.strip().splitlines()[-1])


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def oversubscription(threads: int) -> str | None:
    """A warning when other work competes for the cores (the 1-minute load average, which counts
    the bench's own measuring process too, above the cores), else None. Timings taken then are
    slower and noisier: paired ratios still hold best."""
    load = load_average()
    if load is None:
        return None
    cores = cpu_cores()
    if load > cores + 0.5:
        return (
            f"warning: load average {load:.1f} on {cores} cores: other processes compete for the CPU, so timings are"
            f" slow and noisy (each configuration runs {threads} torch threads); rerun on a quiet machine"
        )
    return None


def load_average() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
