"""The report's figures (seaborn), each saved as PNG and PDF by analysis/report.py.

- ``per_epoch``: seconds per search epoch and the search phase's peak memory per method (the
  DSNAS paper's per-epoch speed and memory claims, Sec. 5);
- ``consistency``: search-stage against retrain accuracy per method, with Kendall tau (the
  analogue of the paper's Figure 1);
- ``cost``: final accuracy against total device-hours (one- and two-stage methods);
- ``device_hours``: search, finetune and retrain device-hours stacked per method (Table 3 as bars).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


def _label(df: pd.DataFrame) -> pd.Series:
    """ "method" alone where one space was run, else "method / space"."""
    if df["space"].nunique() > 1:
        return df["method"] + " / " + df["space"]
    return df["method"]


def per_epoch_figure(per_epoch: pd.DataFrame) -> plt.Figure:
    df = per_epoch.assign(label=_label(per_epoch)).sort_values("search_epoch_s")
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.35 * len(df) + 1.6))
    sns.barplot(df, y="label", x="search_epoch_s", ax=axes[0], color="C0")
    axes[0].set(xlabel="seconds per search epoch", ylabel="")
    sns.barplot(df, y="label", x="search_peak_mem_mib", ax=axes[1], color="C1")
    axes[1].set(xlabel="peak memory of the search phase (MiB)", ylabel="")
    axes[1].set_yticklabels([])
    device = ", ".join(sorted(set(map(str, df["device"]))))
    fig.suptitle(f"Search cost per epoch ({device})")
    fig.tight_layout()
    return fig


def consistency_figure(consistency: pd.DataFrame, correlation: pd.DataFrame) -> plt.Figure:
    groups = list(correlation.itertuples())
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax, g in zip(axes.flat, groups, strict=False):
        table = consistency[consistency["path"] == g.path]
        sampled = table[table["sampled"].astype(bool)]
        sns.scatterplot(sampled, x="search_acc", y="retrain_acc", ax=ax, s=28, color="C0")
        picked = table[table["picked"].astype(bool)]
        if not picked.empty:
            ax.scatter(picked["search_acc"], picked["retrain_acc"], marker="*", s=160, color="C3", label="picked")
            ax.legend(loc="lower right", fontsize=7)
        interval = f" [{g.kendall_tau_lo:.2f}, {g.kendall_tau_hi:.2f}]" if hasattr(g, "kendall_tau_lo") else ""
        ax.set_title(f"{g.method} / {g.space}: tau = {g.kendall_tau:.2f}{interval}", fontsize=9)
        ax.set(xlabel="search-stage accuracy (inherited)", ylabel="retrain accuracy")
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def cost_figure(runs: pd.DataFrame) -> plt.Figure:
    df = runs.assign(label=_label(runs), stages=runs["one_stage"].map({True: "one-stage", False: "two-stage"}))
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.scatterplot(df, x="total_device_hours", y="final_acc", hue="label", style="stages", s=70, ax=ax)
    ax.set(xlabel="total device-hours (search + retrain)", ylabel="final accuracy (deployed model)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def device_hours_figure(cost: pd.DataFrame) -> plt.Figure:
    df = cost.assign(label=_label(cost)).sort_values("total_device_hours")
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(df) + 1.4))
    searching = df["search_device_hours"] - df["finetune_device_hours"]
    ax.barh(df["label"], searching, color="C0", label="search (warm-up, search, select)")
    ax.barh(df["label"], df["finetune_device_hours"], left=searching, color="C1", label="finetune (one-stage)")
    ax.barh(df["label"], df["retrain_device_hours"], left=df["search_device_hours"], color="C2", label="retrain")
    ax.set(xlabel="device-hours", ylabel="")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
