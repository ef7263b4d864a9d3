"""The estimator lab's results (experiments/estimator_lab.py): its tables and figures, read from
the files of a lab folder (lab.json, lab.csv, lab_curve.csv) alone."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

#: the columns of lab.csv a table shows, in order
SHOWN = (
    "space",
    "point",
    "estimator",
    "cos",
    "cos_se",
    "rel_bias",
    "rel_bias_se",
    "rel_std",
    "rel_err",
    "relaxation_cos",
    "relaxed_cos",
    "cost_vs_path",
    "ops_run",
    "ops_probed",
    "samples",
)


def collect_lab(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every lab.csv row, every lab_curve.csv row) under ``root``, each with its space and folder."""
    rows, curves = [], []
    for meta_path in sorted(Path(root).rglob("lab.json")):
        folder = meta_path.parent
        try:
            meta = json.loads(meta_path.read_text())
            table = pd.read_csv(folder / "lab.csv")
            curve = pd.read_csv(folder / "lab_curve.csv")
        except (OSError, ValueError):
            continue
        label = f"{meta.get('space')} {meta.get('scale')}"
        if str(meta.get("batchnorm", "")).startswith("running"):
            label += ", BN running stats"
        extra = {"space": meta.get("space"), "scale": meta.get("scale"), "lab": label, "source": str(folder)}
        rows.append(table.assign(**extra))
        curves.append(curve.assign(**extra))
    if not rows:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(rows, ignore_index=True), pd.concat(curves, ignore_index=True)


def lab_table(lab: pd.DataFrame) -> pd.DataFrame:
    return lab[[c for c in SHOWN if c in lab.columns]] if not lab.empty else lab


def _grid(frame: pd.DataFrame) -> tuple[plt.Figure, list]:
    """A panel per (lab, alpha point): a row per lab folder, a column per point."""
    key = "lab" if "lab" in frame.columns else "space"
    labs = list(dict.fromkeys(frame[key]))
    points = list(dict.fromkeys(frame["point"]))
    fig, axes = plt.subplots(len(labs), len(points), figsize=(4.6 * len(points), 3.8 * len(labs)), squeeze=False)
    panels = []
    for r, lab in enumerate(labs):
        for c, point in enumerate(points):
            df = frame[(frame[key] == lab) & (frame["point"] == point)]
            if df.empty:
                axes[r][c].axis("off")
            else:
                panels.append((axes[r][c], lab, point, df))
    return fig, panels


def _colours(frame: pd.DataFrame) -> dict[str, tuple]:
    """One colour per estimator for the whole figure, so a colour means the same in every panel."""
    names = sorted(set(frame["estimator"].astype(str)))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def bias_variance_figure(lab: pd.DataFrame) -> plt.Figure:
    """Per (lab, point): each estimator at (per-sample noise, bias), both relative to |exact|."""
    fig, panels = _grid(lab)
    colour = _colours(lab)
    for ax, space, point, df in panels:
        for _, r in df.iterrows():
            x = max(float(r["rel_std"]), 1e-6)
            c = colour[str(r["estimator"])]
            ax.errorbar(x, r["rel_bias"], yerr=r.get("rel_bias_se", 0.0), fmt="o", capsize=3, color=c)
            ax.annotate(str(r["estimator"]), (x, r["rel_bias"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("per-sample noise sqrt(tr Cov) / |exact|")
        ax.set_ylabel("bias |E g - exact| / |exact|")
        ax.set_title(f"{space}, alpha {point}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def error_curve_figure(curves: pd.DataFrame) -> plt.Figure:
    """Relative error of the mean of n samples against n: 1/sqrt(n) for an unbiased estimator."""
    fig, panels = _grid(curves)
    colour = _colours(curves)
    for ax, space, point, df in panels:
        for name, d in df.groupby("estimator", sort=False):
            ax.plot(d["n"], d["rel_err"], marker=".", label=str(name), color=colour[str(name)])
        n = np.array(sorted(df["n"].unique()), dtype=float)
        first = df[df["n"] == 1]["rel_err"]
        if len(first):
            ax.plot(n, float(first.median()) / np.sqrt(n), "k:", label="1/sqrt(n)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("samples averaged")
        ax.set_ylabel("|mean - exact| / |exact|")
        ax.set_title(f"{space}, alpha {point}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return fig
