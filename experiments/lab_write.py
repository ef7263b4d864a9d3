"""Writing the estimator lab's folder: lab.csv, lab_curve.csv, lab.json, figures/ (each file
written whole to a temporary name and renamed, so a crash never leaves half a table)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.lab import bias_variance_figure, error_curve_figure
from nasbench.records import atomic_write, atomic_write_json


def write_lab(folder: Path, rows: list[dict], curves: list[dict], meta: dict) -> None:
    space = meta["space"]
    table = pd.DataFrame(rows).assign(space=space)
    curve = pd.DataFrame(curves).assign(space=space)
    atomic_write(folder / "lab.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(folder / "lab_curve.csv", lambda tmp: curve.to_csv(tmp, index=False))
    (folder / "figures").mkdir(exist_ok=True)
    for name, make, data in (
        ("lab_bias_variance", bias_variance_figure, table),
        ("lab_error", error_curve_figure, curve),
    ):
        fig = make(data)
        atomic_write(folder / "figures" / f"{name}.png", lambda tmp, fig=fig: fig.savefig(tmp, dpi=120, format="png"))
        plt.close(fig)
    atomic_write_json(folder / "lab.json", meta)  # last: its presence means the folder is complete
