"""Checkpoints and resume: a run survives preemption (README, "Interruptions and resume").

A run is a fixed sequence of *units*: every epoch of every training phase, and the steps between
phases whose results later steps read (the search-stage accuracy, the candidate selection, the
saved supernet). After each unit the run folder's ``checkpoint.pt`` is rewritten atomically with
everything the rest of the run depends on: every network, alpha, optimizer, schedule, sampler,
estimator and held-out stream the phases registered (:meth:`Checkpointer.track`), the global
random generators, the budget meter's phases, the results of finished units, and the size of
``metrics.jsonl`` at that moment. ``checkpoint.json`` beside it says where the run stands.

Resuming runs the same pipeline again. A unit the checkpoint lists as done is skipped: a training
phase's registered objects take their saved state when the phase registers them, and a finished
step returns its saved result. The first unit not done restores the random generators and carries
on, so a resumed run on the same machine computes exactly what an uninterrupted one would. A stop
in the middle of an epoch (SIGTERM, SIGINT, or the periodic ``checkpoint.minutes``) saves the
epoch's position; the resumed epoch skips the batches already trained.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasbench import distributed
from nasbench.errors import UserError
from nasbench.records import atomic_write, atomic_write_json

CHECKPOINT = "checkpoint.pt"
SIDECAR = "checkpoint.json"
FORMAT = 1
#: in a distributed run, the ranks agree on a stop or a save every this many steps
DUE_EVERY = 10
#: configuration keys that may differ between a run and its resumption
VOLATILE_KEYS = ("resume", "overwrite", "progress", "checkpoint", "threads", "tensorboard")


class Interrupted(Exception):
    """A signal stopped the run after a checkpoint; the exit status is 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.status = 128 + signum


def run_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved run configuration a resumption must share."""
    return {k: v for k, v in cfg.items() if k not in VOLATILE_KEYS and k != "hydra"}


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: saved -> current`` for every leaf that differs (nested keys joined by dots)."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} there, {b} here")
    return out


def check_config(state: Mapping[str, Any], config: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint made by another configuration."""
    diff = config_differences(state["config"], config)
    if diff:
        raise UserError(
            f"{path} was made by another configuration ({'; '.join(diff[:3])}); resume with the same"
            " command, or pass overwrite=true to start this run again"
        )


def read_sidecar(run_dir: Path) -> dict[str, Any] | None:
    """``checkpoint.json`` of a run folder (None if absent or unreadable)."""
    try:
        return json.loads((Path(run_dir) / SIDECAR).read_text())
    except (OSError, ValueError):
        return None


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The saved checkpoint of ``run_dir``; a damaged or foreign file is a one-line error."""
    path = Path(run_dir) / CHECKPOINT
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch raises many kinds for a damaged file)
        raise UserError(
            f"{path} is damaged ({type(err).__name__}) and cannot be resumed; pass overwrite=true to start"
            " this run again from the beginning"
        ) from None
    keys = {"format", "config", "done", "memo", "objects", "rng", "meter", "metrics_bytes"}
    if not isinstance(state, dict) or not keys <= set(state) or state["format"] != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this version of the suite; pass overwrite=true to start over")
    return state


def _state_of(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, nn.parallel.DistributedDataParallel):
        obj = obj.module
    return obj.state_dict()


def _load_into(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, nn.Module):
        getattr(obj, "module", obj).load_state_dict(state)
    else:
        obj.load_state_dict(state)


def rng_state() -> dict[str, Any]:
    """Every global random generator a run may draw from (torch, CUDA, Python, NumPy)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves a run's units as they finish and replays a saved run up to where it stopped.

    ``run_dir=None`` (the consistency experiment, the benchmark) makes every method a pass-through.
    ``minutes > 0`` also saves in the middle of an epoch when that long has passed since the last save.
    """

    def __init__(
        self,
        run_dir: Path | None,
        config: Mapping[str, Any] | None = None,
        minutes: float = 0.0,
        metrics_path: Path | None = None,
        meter: Any = None,
    ) -> None:
        self.dir = None if run_dir is None else Path(run_dir)
        self.config = dict(config or {})
        self.minutes = float(minutes)
        self.metrics_path = metrics_path
        self.meter = meter  # nasbench.budget.BudgetMeter: its finished phases go into every checkpoint
        self.objects: dict[str, Any] = {}
        self.done: list[str] = []
        self.memo: dict[str, Any] = {}
        self.saved: dict[str, Any] | None = None  # the checkpoint being resumed
        self._restored: set[str] = set()
        self._replaying = False  # until the replay passes the checkpoint's last unit
        self._partial: dict[str, Any] | None = None
        self._open_record: dict[str, Any] | None = None
        self._calls: dict[str, int] = {}
        self.stop_signal: int | None = None
        self.elapsed_before = 0.0
        self._started = time.perf_counter()
        self._last_save = time.monotonic()
        self._due_calls = 0

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    @property
    def path(self) -> Path:
        assert self.dir is not None
        return self.dir / CHECKPOINT

    # ----- resuming ------------------------------------------------------------------------
    def resume(self, state: Mapping[str, Any]) -> None:
        """Start replaying ``state`` (from :func:`load_checkpoint`); refuses another configuration."""
        check_config(state, self.config, self.path)
        self.saved = dict(state)
        self.done = list(state["done"])
        self.memo = dict(state["memo"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self._replaying = True
        self._partial = state.get("partial")
        self._open_record = state["meter"].get("open")
        if self.meter is not None:
            self.meter.restore(state["meter"]["phases"])

    def where(self) -> str:
        """Where the resumed checkpoint stands, for the log."""
        return (self.saved or {}).get("where", "the start")

    def skip(self, unit: str) -> bool:
        """Whether ``unit`` was done before the interruption (a resumed run skips it). Passing the
        last one ends the replay: the random generators take their saved state there."""
        if self.saved is None or unit not in self.saved["done"]:
            return False
        if self._replaying and unit == self.saved["done"][-1]:
            self._end_replay()
        return True

    def track(self, name: str, obj: Any) -> None:
        """Register a stateful object; when resuming, it takes its saved state now."""
        if obj is None:
            return
        self.objects[name] = obj
        saved = (self.saved or {}).get("objects", {})
        if name in saved and name not in self._restored:
            _load_into(obj, saved[name])
            self._restored.add(name)

    def _end_replay(self) -> None:
        self._replaying = False
        set_rng_state(self.saved["rng"])

    def begin_unit(self) -> None:
        """Called before a unit that is not done runs: the replay must be over by then."""
        if self._replaying and not self.saved["done"]:  # stopped inside the first unit
            self._end_replay()
        if self._replaying:  # a unit the checkpoint does not know: another pipeline made it
            raise UserError(
                f"{self.path} does not match this run's phases (it stands {self.where()}); it was made by"
                " another version of the code: pass overwrite=true to start over"
            )
        if self.saved is not None:
            missing = set(self.saved["objects"]) - self._restored
            if missing:
                raise UserError(
                    f"{self.path} holds state for {sorted(missing)}, which this run never built: it was made by"
                    " another version of the code; pass overwrite=true to start over"
                )

    def partial(self, phase: str, epoch: int) -> dict[str, Any] | None:
        """The saved position inside ``phase``'s ``epoch`` (a stop in the middle of an epoch), once."""
        part = self._partial
        if part and part["phase"] == phase and part["epoch"] == epoch:
            self._partial = None
            return part
        return None

    def open_phase(self, phase: str) -> dict[str, Any] | None:
        """The meter's record of ``phase`` if the checkpoint was taken inside it, once."""
        record = self._open_record
        if record and record["name"] == phase:
            self._open_record = None
            return record
        return None

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """Run ``compute`` as a unit: its result is saved and returned again on resume."""
        n = self._calls.get(key, 0)
        self._calls[key] = n + 1
        unit = f"{key}#{n}"
        if self.skip(unit):
            return self.memo[unit]
        self.begin_unit()
        value = compute()
        if self.enabled:
            self.memo[unit] = value
            self.done.append(unit)
            self.save(where=f"after {key}")
            self.stop_if_asked(f"after {key}")
        return value

    # ----- saving --------------------------------------------------------------------------
    def due(self) -> int:
        """0: go on; 1: save a mid-epoch checkpoint (``minutes`` passed); 2: save and stop (a
        signal). Every rank of a distributed run gets the same answer."""
        if not self.enabled:
            return 0
        want = 2 if self.stop_signal is not None else 0
        if not want and self.minutes > 0 and time.monotonic() - self._last_save >= 60.0 * self.minutes:
            want = 1 if distributed.current().is_main else 0
        if distributed.current().enabled:  # the ranks agree every DUE_EVERY steps (a collective syncs)
            self._due_calls += 1
            if self._due_calls % DUE_EVERY:
                return 0
            want = distributed.max_int(want)
            if want == 2 and self.stop_signal is None:
                self.stop_signal = signal.SIGTERM
        return want

    def save(self, where: str, partial: Any = None) -> None:
        """Write checkpoint.pt and checkpoint.json (rank 0; atomic: a reader never sees half a file)."""
        if not self.enabled:
            return
        self._last_save = time.monotonic()
        if not distributed.current().is_main:
            return
        metrics = self.metrics_path
        state = {
            "format": FORMAT,
            "config": self.config,
            "done": list(self.done),
            "memo": dict(self.memo),
            "objects": {name: _state_of(obj) for name, obj in self.objects.items()},
            "rng": rng_state(),
            "meter": {
                "phases": [] if self.meter is None else self.meter.as_dicts(),
                "open": None if self.meter is None else self.meter.snapshot(),
            },
            "partial": partial,
            "metrics_bytes": metrics.stat().st_size if metrics is not None and metrics.exists() else 0,
            "elapsed_s": self.elapsed(),
            "where": where,
        }
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        atomic_write_json(
            self.dir / SIDECAR,
            {"where": where, "done": len(self.done), "config": self.config, "saved_at": time.time()},
        )

    def elapsed(self) -> float:
        """Wall seconds of the run so far, over every interrupted part."""
        return self.elapsed_before + time.perf_counter() - self._started

    def stop_if_asked(self, where: str) -> None:
        """Raise :class:`Interrupted` if a signal asked for a stop (on every rank, or none)."""
        if not self.enabled:
            return
        if distributed.current().enabled and distributed.max_int(int(self.stop_signal is not None)):
            self.stop_signal = self.stop_signal or signal.SIGTERM
        if self.stop_signal is not None:
            name = signal.Signals(self.stop_signal).name
            raise Interrupted(
                f"stopped by {name} {where}: checkpoint written to {self.path}; run the same command again"
                " (or add resume=true) to continue",
                self.stop_signal,
            )

    def finished(self) -> None:
        """The run is complete (summary.json written): its checkpoint is no longer needed."""
        if self.enabled and distributed.current().is_main:
            for name in (CHECKPOINT, SIDECAR):
                (self.dir / name).unlink(missing_ok=True)

    # ----- signals -------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM and a first SIGINT ask for a checkpoint at the next step; a second SIGINT stops
        at once (KeyboardInterrupt)."""

        def ask(signum: int, _frame: Any) -> None:
            if signum == signal.SIGINT and self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            if distributed.current().is_main:
                print(
                    f"\n{signal.Signals(signum).name}: saving a checkpoint after this step"
                    " (Ctrl-C again stops without one)",
                    file=sys.stderr,
                    flush=True,
                )

        signal.signal(signal.SIGTERM, ask)
        signal.signal(signal.SIGINT, ask)


def truncate_metrics(path: Path, size: int) -> None:
    """Cut ``metrics.jsonl`` back to what it held at the checkpoint (later lines are redone)."""
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())
