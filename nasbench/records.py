"""The run record (README, "The run record"): the folder a run writes, atomically.

``metrics.jsonl`` (one line per epoch and phase, appended as training goes), ``summary.json``
(written once the run is complete), ``child.pt2`` (the deployable child, torch.export) and
``child_state.pt`` (its state dict and architecture) and ``supernet.pt`` (the supernet's weights
at the end of the search stage, alpha and the picked architecture). Every file is written to a temporary name
in the same folder and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasbench.contract import REQUIRED_SUMMARY_KEYS
from nasbench.errors import UserError

SUMMARY_KEYS = (*REQUIRED_SUMMARY_KEYS, "input_shape")  # what this suite writes: the contract and more


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


class RunRecord:
    """Writes the files of one run folder."""

    def __init__(self, run_dir: Path | str, create: bool = True) -> None:
        self.dir = Path(run_dir)
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def peek(cls, run_dir: Path | str) -> RunRecord:
        """A record for reading only: creates nothing."""
        return cls(run_dir, create=False)

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.dir / "summary.json"

    def is_complete(self) -> bool:
        try:
            return json.loads(self.summary_path.read_text()).get("status") == "complete"
        except (OSError, ValueError, AttributeError):
            return False

    def guard(self, overwrite: bool) -> None:
        """Refuse to write over a complete run unless the user said ``overwrite=true``."""
        if self.is_complete() and not overwrite:
            raise UserError(
                f"{self.dir} already holds a complete run; choose another hydra.run.dir or pass overwrite=true"
            )
        if overwrite and self.metrics_path.exists():
            self.metrics_path.unlink()

    #: what Hydra and the log put into a run folder before the run itself writes anything
    def discard_if_fresh(self, log: str = "run.log") -> bool:
        """Remove the folder of a run refused before it wrote anything of its own (only Hydra's
        ``.hydra/`` and its job log, ``log``, in it), so that a refused configuration leaves no
        folder that a report would list as an unfinished run. The caller makes sure the folder did
        not exist before this process (it could hold a user's earlier files). Returns whether it
        removed it."""
        try:
            entries = {p.name for p in self.dir.iterdir()}
        except OSError:
            return False
        if not entries <= {".hydra", log}:
            return False
        shutil.rmtree(self.dir / ".hydra", ignore_errors=True)
        (self.dir / log).unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            return False
        return True

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        missing = [k for k in SUMMARY_KEYS if k not in summary]
        if missing:
            raise ValueError(f"summary lacks {missing}")
        atomic_write_json(self.summary_path, dict(summary))

    def save_child(
        self, child: nn.Module, example: torch.Tensor, meta: Mapping[str, Any]
    ) -> torch.export.ExportedProgram:
        """Export ``child`` (eval mode, any batch size) to child.pt2; save its state to child_state.pt."""
        child = child.eval()
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        program = torch.export.export(child, (example,), dynamic_shapes=({0: batch},))
        atomic_write(self.dir / "child.pt2", lambda tmp: torch.export.save(program, tmp))
        state = {"state_dict": child.state_dict(), **meta}
        atomic_write(self.dir / "child_state.pt", lambda tmp: torch.save(state, tmp))
        return program

    @property
    def supernet_path(self) -> Path:
        return self.dir / "supernet.pt"

    def save_supernet(self, supernet: nn.Module, meta: Mapping[str, Any]) -> None:
        """Save the supernet at the end of the search stage (``meta``: method, space, picked arch,
        alpha), so that the consistency experiment can score architectures without searching again."""
        state = {"state_dict": supernet.state_dict(), **meta}
        atomic_write(self.supernet_path, lambda tmp: torch.save(state, tmp))

    def load_supernet(self) -> dict[str, Any]:
        """What :meth:`save_supernet` wrote; a missing or unreadable file is a one-line error."""
        path = self.supernet_path
        if not path.is_file():
            raise UserError(f"{self.dir} holds no supernet.pt: give the folder of a run made by experiments/run.py")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 (torch raises many kinds for a damaged file)
            kind = type(err).__name__
            raise UserError(f"{path} is not a readable supernet checkpoint ({kind}); run the search again") from None
        if not isinstance(state, dict) or not {"state_dict", "space", "arch"} <= set(state):
            raise UserError(f"{path} is not a supernet checkpoint of this suite (no state_dict, space and arch)")
        return state
