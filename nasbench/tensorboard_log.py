"""``tensorboard=true``: every metrics.jsonl line also goes to TensorBoard (torch.utils.tensorboard).

Each numeric field of a line becomes a scalar tagged ``<phase>/<field>`` (loss, train_acc, lr,
alpha_entropy, temperature, wall_s, ...) at step ``epoch`` of that phase, so the curves of a run
are one ``tensorboard --logdir outputs`` away. metrics.jsonl stays the record; this is a view of
it. Needs the ``tensorboard`` package (``pip install -e '.[tensorboard]'``; experiments/setup.sh
installs it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasbench.errors import UserError


class TensorBoardSink:
    """Writes metric lines as TensorBoard scalars into ``folder``."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "tensorboard=true needs the tensorboard package: .venv/bin/pip install tensorboard"
                " (or pip install -e '.[tensorboard]')"
            ) from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self._lines: Counter[str] = Counter()

    def add(self, record: Mapping[str, Any]) -> None:
        phase = str(record.get("phase", "run"))
        self._lines[phase] += 1
        step = int(record["epoch"]) if isinstance(record.get("epoch"), int) else self._lines[phase]
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(f"{phase}/{key}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
