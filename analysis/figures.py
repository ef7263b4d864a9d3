"""The report's figures (seaborn), each saved as PNG and PDF by analysis/report.py.

- ``per_epoch``: seconds per search epoch and the search phase's peak memory per method (the
  DSNAS paper's per-epoch speed and memory claims, Sec. 5);
- ``consistency``: search-stage against retrain accuracy per method, with Kendall tau (the
  analogue of the paper's Figure 1);
- ``cost``: final accuracy against total device-hours (one- and two-stage methods);
- ``device_hours``: search, finetune and retrain device-hours stacked per method (Table 3 as bars);
- ``front``: final accuracy against the deployed network's MACs, every run (a DSO-NAS gamma sweep
  is a line of points: its accuracy-MACs front);
- ``sparsity``: the network a sparse method (DSO-NAS) would keep, per pretrain/search epoch;
- ``tau_epochs``: Kendall tau against the supernet's search epochs per method, against the noise
  ceiling and the parameter-count tau where the experiments share them.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


def _label(df: pd.DataFrame) -> pd.Series:
    """ "method / estimator [variant]" per row (the tables' rows), with " @ space" where the
    collection holds more than one space."""
    label = df["method"].astype(str) + " / " + df["estimator"].astype(str)
    if "variant" in df.columns:
        variant = df["variant"].fillna("").astype(str)
        label = label + variant.map(lambda v: f" [{v}]" if v else "")
    if df["space"].nunique() > 1:
        label = label + " @ " + df["space"].astype(str)
    return label


def context(df: pd.DataFrame) -> str:
    """What every figure's title says it shows: space, scale, budget, data set and seeds."""
    parts = []
    for column, name in (("space", "space"), ("scale", "scale"), ("budget_name", "budget"), ("data", "data")):
        if column in df.columns:
            parts.append(f"{name} {'/'.join(sorted(map(str, df[column].dropna().unique())))}")
    if "seeds" in df.columns:
        low, high = int(df["seeds"].min()), int(df["seeds"].max())
        parts.append(f"seeds {low}" if low == high else f"seeds {low}-{high} per row")
    elif "seed" in df.columns:
        per_row = df.groupby(_label(df))["seed"].nunique()
        low, high = int(per_row.min()), int(per_row.max())
        parts.append(f"seeds {low}" if low == high else f"seeds {low}-{high} per row")
    return ", ".join(parts)


def per_epoch_figure(per_epoch: pd.DataFrame) -> plt.Figure:
    df = per_epoch.assign(label=_label(per_epoch)).sort_values("search_epoch_s")
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.35 * len(df) + 1.6))
    sns.barplot(df, y="label", x="search_epoch_s", ax=axes[0], color="C0")
    axes[0].set(xlabel="seconds per search epoch", ylabel="")
    sns.barplot(df, y="label", x="search_peak_mem_mib", ax=axes[1], color="C1")
    axes[1].set(xlabel="peak memory of the search phase (MiB)", ylabel="")
    axes[1].set_yticklabels([])
    device = ", ".join(sorted(set(map(str, df["device"]))))
    fig.suptitle(f"Search cost per epoch ({device})\n{context(per_epoch)}", fontsize=9)
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
        name = f"{g.method} / {g.estimator} @ {g.space}, {g.data}, budget {g.budget_name}, seed {g.seed}"
        ax.set_title(f"{name}\ntau = {g.kendall_tau:.2f}{interval}", fontsize=8)
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
    ax.set_title(f"Final accuracy against cost\n{context(runs)}", fontsize=9)
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
    ax.set_title(f"Device-hours per phase (mean over seeds)\n{context(cost)}", fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def alpha_figure(runs: pd.DataFrame, alpha: pd.DataFrame) -> plt.Figure:
    """alpha over the search epochs, one panel per row of the run tables (its first seed): for
    each decision, the probability of the op it ends on (the DSNAS paper's Figures 4 and 5 show
    the same trajectories per layer). Each line starts at epoch 0 from 1/K (K: the decision's
    candidates): every shipped method initialises alpha within 1% of uniform (methods' configs,
    ``alpha_init``). Near 1/K all epochs long: alpha did not learn."""
    runs = runs[runs["path"].isin(set(alpha["path"]))].assign(label=lambda d: _label(d))
    firsts = runs.sort_values("seed").groupby("label", sort=True).head(1)
    cols = min(3, len(firsts))
    rows = -(-len(firsts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows + 0.6), squeeze=False)
    for ax, run in zip(axes.flat, firsts.itertuples(), strict=False):
        mine = alpha[alpha["path"] == run.path]
        last = mine[mine["epoch"] == mine["epoch"].max()]
        chosen = last.loc[last.groupby("decision")["prob"].idxmax(), ["decision", "candidate"]]
        picked = mine.merge(chosen, on=["decision", "candidate"])
        first = mine[mine["epoch"] == mine["epoch"].min()]
        for decision, line in picked.groupby("decision"):
            k = int((first[first["decision"] == decision]["prob"] > 0).sum()) or 1
            epochs, probs = [0, *line["epoch"]], [1.0 / k, *line["prob"]]
            ax.plot(epochs, probs, marker="o", ms=3, lw=1, label=f"{decision}")
        k = int((first.groupby("decision")["prob"].apply(lambda p: (p > 0).sum())).max())
        ax.axhline(1.0 / max(k, 1), color="grey", lw=0.8, ls="--")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{run.label} (seed {run.seed})", fontsize=8)
        ax.set(xlabel="search epoch", ylabel="p of the final op")
    for ax in list(axes.flat)[len(firsts) :]:
        ax.axis("off")
    fig.suptitle(f"alpha over the search, one line per decision (dashed: uniform)\n{context(runs)}", fontsize=9)
    fig.tight_layout()
    return fig


def step_cost_figure(step_cost: pd.DataFrame) -> plt.Figure:
    """Each bench configuration's step time and peak memory as multiples of the child's."""
    df = step_cost[step_cost["config"] != "loader"].dropna(subset=["time_ratio"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.35 * len(df) + 1.6))
    sns.barplot(df, y="config", x="time_ratio", ax=axes[0], color="C0")
    axes[0].set(xlabel="step time / child's step time", ylabel="")
    if "mem_ratio" in df.columns:
        sns.barplot(df.dropna(subset=["mem_ratio"]), y="config", x="mem_ratio", ax=axes[1], color="C1")
    axes[1].set(xlabel="peak memory / child's", ylabel="")
    for ax in axes:
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    where = ", ".join(
        f"{name} {'/'.join(sorted(map(str, df[col].dropna().unique())))}"
        for col, name in (("space", "space"), ("scale", "scale"), ("batch_size", "batch"), ("device", "device"))
        if col in df.columns
    )
    title = "Per-step cost against the stand-alone child (experiments/bench.py, medians over rounds)"
    fig.suptitle(f"{title}\n{where}", fontsize=9)
    fig.tight_layout()
    return fig


def front_figure(runs: pd.DataFrame) -> plt.Figure:
    """Final accuracy against MMACs of the deployed network, one point per run; runs of one method
    and estimator whose configurations differ only in hyperparameters (DSO-NAS's ``gamma``, the
    variant column) are joined in MACs order: the accuracy-MACs front such a sweep traces."""
    df = runs.assign(mmacs=runs["flops"] / 1e6, method_estimator=runs["method"] + " / " + runs["estimator"])
    df = df.assign(run=_label(df))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.scatterplot(df, x="mmacs", y="final_acc", hue="run", style="method_estimator", s=70, ax=ax)
    for _, group in df.groupby(["method_estimator", "space"]):
        means = group.groupby(group.get("variant", pd.Series("", index=group.index)).fillna("")).agg(
            mmacs=("mmacs", "mean"), final_acc=("final_acc", "mean")
        )
        if len(means) > 1:
            means = means.sort_values("mmacs")
            ax.plot(means["mmacs"], means["final_acc"], color="grey", lw=0.8, ls="--", zorder=0)
    ax.set(xlabel="MMACs of the deployed network (per image)", ylabel="final accuracy (deployed model)")
    ax.set_title(f"Accuracy against MACs (dashed: one method's variants)\n{context(runs)}", fontsize=9)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def sparsity_figure(runs: pd.DataFrame, sparsity: pd.DataFrame) -> plt.Figure:
    """Live connections and MACs of the network pruning would keep, per pretrain/search epoch,
    as fractions of the first epoch's (DSO-NAS's lambda sparsity over the search)."""
    runs = runs[runs["path"].isin(set(sparsity["path"]))].assign(label=lambda d: _label(d))
    labels = dict(zip(runs["path"], runs["label"] + " (seed " + runs["seed"].astype(str) + ")"))
    df = sparsity[sparsity["path"].isin(labels)].copy()
    df["run"] = df["path"].map(labels)
    first = df.sort_values("step").groupby("path").first()
    for column in ("live_connections", "live_macs"):
        df[column + "_frac"] = df[column] / df["path"].map(first[column]).clip(lower=1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, column, what in ((axes[0], "live_connections_frac", "connections"), (axes[1], "live_macs_frac", "MACs")):
        sns.lineplot(df, x="step", y=column, hue="run", marker="o", ax=ax, legend=ax is axes[1])
        ax.set(xlabel="epoch (pretrain, then search)", ylabel=f"live {what} / first epoch's", ylim=(0, 1.05))
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"What pruning would keep, per epoch\n{context(runs)}", fontsize=9)
    fig.tight_layout()
    return fig


def tau_epochs_figure(correlation: pd.DataFrame) -> plt.Figure:
    """Kendall tau (95% interval) against the supernet's search epochs, a line per method on a
    space (Ning et al. and Zhang et al.: ranking improves with supernet training)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for (method, space), df in correlation.groupby(["method", "space"], sort=True):
        df = df.sort_values("search_epochs")
        lo = df["kendall_tau"] - df.get("kendall_tau_lo", df["kendall_tau"])
        hi = df.get("kendall_tau_hi", df["kendall_tau"]) - df["kendall_tau"]
        ax.errorbar(
            df["search_epochs"], df["kendall_tau"], yerr=[lo, hi], marker="o", capsize=3, label=f"{method} @ {space}"
        )
    _reference_lines(ax, correlation)
    ax.set(xlabel="supernet search epochs", ylabel="Kendall tau (search vs retrain)")
    ax.set_title(f"Ranking against supernet training\n{context(correlation)}", fontsize=9)
    ax.axhline(0, color="grey", lw=0.6)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _reference_lines(ax: plt.Axes, correlation: pd.DataFrame) -> None:
    """The bars a supernet's tau is read against, where every experiment of the figure shares
    them (one set of architectures and one ground truth): the noise ceiling (tau between two
    retrain seeds, with its interval, as a band) and the tau of the parameter count alone."""
    for column, label, style in (
        ("noise_ceiling_tau", "noise ceiling (retrain seed vs seed)", {"color": "black", "ls": "-"}),
        ("params_tau", "parameter count alone", {"color": "dimgrey", "ls": "--"}),
    ):
        values = correlation[column].dropna().round(6).unique() if column in correlation.columns else []
        if len(values) != 1:
            continue
        ax.axhline(values[0], lw=1, label=f"{label}: {values[0]:.2f}", **style)
        lo, hi = f"{column}_lo", f"{column}_hi"
        if lo in correlation.columns and correlation[lo].notna().any():
            ax.axhspan(correlation[lo].dropna().iloc[0], correlation[hi].dropna().iloc[0], color="grey", alpha=0.15)
