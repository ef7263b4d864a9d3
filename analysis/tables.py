"""The report's tables, computed from a :class:`analysis.records.Collection`.

- ``cost``: the shape of the DSNAS paper's Table 3: search, retrain and total device-hours,
  search_acc (inherited weights) and final_acc (the deployed model), per method, space, data
  set and budget; mean over seeds, with the standard deviation where there are several.
  "Search" is every counted phase but ``retrain``: for DSNAS that includes the finetune of the
  inherited child (the paper counts its 240 epochs of search-from-search as search cost), shown
  apart as well (``finetune_device_hours``).
- ``savings``: each one-stage method's total against each two-stage one under the same budget
  (paper: DSNAS 420 vs SPOS 634 GPU-h, 33.8% saved).
- ``per_epoch``: seconds per search epoch and the search phase's peak memory.
- ``correlation``: every statistic of analysis/correlation.py per consistency experiment.
- ``picked``: where each method's own pick ranks after retraining.
"""

from __future__ import annotations

import pandas as pd

from analysis.correlation import STATISTICS, kendall_tau, rank_correlations
from analysis.protocols import best_rank_at_top, precision_at_top
from analysis.records import Collection

#: a row of the run tables: runs agree on all of these, and on every other configuration key
#: (``variant`` names the keys where runs of one method and estimator differ: analysis/variants.py)
GROUP = ["space", "data", "scale", "budget_name", "method", "estimator", "variant"]
#: a consistency experiment's identity
EXPERIMENT = ["space", "data", "budget_name", "method", "estimator"]


def _grouped(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Mean and standard deviation per row of :data:`GROUP`; ``seeds`` counts distinct seeds and
    ``runs`` the records (more runs than seeds: the same seed run twice)."""
    agg = {name: (col, "mean") for name, col in columns.items()}
    agg.update({f"{name}_std": (col, "std") for name, col in columns.items()})
    out = df.groupby(GROUP, dropna=False).agg(seeds=("seed", "nunique"), runs=("seed", "size"), **agg).reset_index()
    return out


def cost_table(c: Collection) -> pd.DataFrame:
    if c.runs.empty:
        return pd.DataFrame()
    columns = {
        "search_device_hours": "search_device_hours",
        "finetune_device_hours": "finetune_device_hours",
        "retrain_device_hours": "retrain_device_hours",
        "total_device_hours": "total_device_hours",
        "search_acc": "search_acc",
        "final_acc": "final_acc",
        "params_m": "params_m",
        "mmacs": "mmacs",
    }
    # summary.json's "flops" counts multiply-accumulates (its flops_unit): the column says MACs
    runs = c.runs.assign(params_m=c.runs["params"] / 1e6, mmacs=c.runs["flops"] / 1e6)
    out = _grouped(runs, columns)
    stage = runs.groupby(GROUP, dropna=False)[["one_stage", "retrain_epochs"]].first().reset_index()
    out = out.merge(stage, on=GROUP)
    out.insert(len(GROUP), "stages", out.pop("one_stage").map({True: "one", False: "two"}))
    return out.sort_values(["space", "data", "budget_name", "stages", "total_device_hours"]).reset_index(drop=True)


def savings_table(cost: pd.DataFrame) -> pd.DataFrame:
    rows = []
    if cost.empty:
        return pd.DataFrame()
    same = ["space", "data", "scale", "budget_name"]
    for key, group in cost.groupby(same, dropna=False):
        one, two = group[group["stages"] == "one"], group[group["stages"] == "two"]
        for _, o in one.iterrows():
            for _, t in two.iterrows():
                rows.append(
                    {
                        **dict(zip(same, key, strict=True)),
                        "one_stage": row_label(o),
                        "two_stage": row_label(t),
                        "one_stage_device_hours": o["total_device_hours"],
                        "two_stage_device_hours": t["total_device_hours"],
                        "saving": 1.0 - o["total_device_hours"] / t["total_device_hours"],
                        "final_acc_difference": o["final_acc"] - t["final_acc"],
                        "retrain_epochs_at_equal_cost": equal_cost_epochs(o, t),
                    }
                )
    return pd.DataFrame(rows)


def equal_cost_epochs(one: pd.Series, two: pd.Series) -> float:
    """How many retrain epochs would make the two-stage method's total device-hours the one-stage
    method's (its search as measured, its retrain at its measured cost per epoch): the
    ``budget.retrain_epochs`` of the matched-budget comparison (DSNAS Table 3 at equal compute).
    NaN without a retrain; 0 when its search alone costs more."""
    epochs = float(two.get("retrain_epochs") or 0)
    if epochs <= 0 or not two["retrain_device_hours"] > 0:
        return float("nan")
    per_epoch = two["retrain_device_hours"] / epochs
    return max(0.0, (one["total_device_hours"] - two["search_device_hours"]) / per_epoch)


def row_label(row: pd.Series) -> str:
    """ "method / estimator [variant]": what a row of the run tables is, in one string."""
    label = f"{row['method']} / {row['estimator']}"
    return f"{label} [{row['variant']}]" if isinstance(row.get("variant"), str) and row["variant"] else label


def step_cost_table(c: Collection) -> pd.DataFrame:
    """Medians over rounds of each bench.csv's configurations (experiments/bench.py): step time,
    images per second, and the time and memory ratios against the stand-alone child."""
    if c.bench.empty:
        return pd.DataFrame()
    ok = c.bench[c.bench["error"].isna()] if "error" in c.bench.columns else c.bench
    cols = [k for k in ("step_ms", "img_per_s", "peak_mem_bytes", "time_ratio", "mem_ratio") if k in ok.columns]
    keys = ["source", *[k for k in ("space", "scale", "batch_size", "device") if k in ok.columns], "method"]
    out = ok.groupby(keys, sort=False, dropna=False)[cols].median().reset_index()
    out["rounds"] = ok.groupby(keys, sort=False, dropna=False).size().values
    if "peak_mem_bytes" in out.columns:
        out["peak_mem_mib"] = out.pop("peak_mem_bytes") / 2**20
    return out.rename(columns={"method": "config"})


def per_epoch_table(c: Collection) -> pd.DataFrame:
    if c.runs.empty:
        return pd.DataFrame()
    runs = c.runs.dropna(subset=["search_epoch_s"])
    runs = runs.assign(search_peak_mem_mib=runs["search_peak_mem_bytes"] / 2**20)
    out = _grouped(runs, {"search_epoch_s": "search_epoch_s", "search_peak_mem_mib": "search_peak_mem_mib"})
    out["device"] = runs.groupby(GROUP, dropna=False)["device"].first().values
    return out.sort_values(["space", "search_epoch_s"]).reset_index(drop=True)


def correlation_table(c: Collection, bootstrap: int, seed: int, top_fraction: float, k: int | None) -> pd.DataFrame:
    if c.consistency.empty:
        return pd.DataFrame()
    rows = []
    for path, table in c.consistency.groupby("path", sort=True):
        sampled = table[table["sampled"].astype(bool)]
        first = table.iloc[0]
        stats = rank_correlations(sampled["search_acc"], sampled["retrain_acc"], bootstrap, seed, top_fraction, k)
        stats.update(protocol_measures(sampled, bootstrap, seed))
        epochs = first.get("search_epochs")
        rows.append(
            {**{g: first[g] for g in EXPERIMENT}, "seed": first["seed"], "search_epochs": epochs, **stats, "path": path}
        )
    out = pd.DataFrame(rows)
    order = [*EXPERIMENT, "seed", "search_epochs", "n", "k"]
    stat_cols = [c for s in STATISTICS for c in (s, f"{s}_lo", f"{s}_hi") if c in out.columns]
    extra = [c for c in PROTOCOL_COLUMNS if c in out.columns]
    return out[order + stat_cols + extra + ["path"]].sort_values(order).reset_index(drop=True)


#: what the published NAS-Bench-201 protocols report beside tau (analysis/protocols.py)
PROTOCOL_COLUMNS = (
    "p_at_top5",
    "br_at_0_5",
    "params_tau",
    "noise_ceiling_tau",
    "noise_ceiling_tau_lo",
    "noise_ceiling_tau_hi",
)


def protocol_measures(sampled: pd.DataFrame, bootstrap: int, seed: int) -> dict[str, float]:
    """P@top-5% and BR@0.5% of the supernet's scores; the tau of the parameter count alone (the bar
    a supernet should clear, Ning et al.); the noise ceiling, Kendall tau between the first two
    retrain seeds with its interval, where the experiment retrained with several."""
    search, retrain = sampled["search_acc"].to_numpy(float), sampled["retrain_acc"].to_numpy(float)
    out = {"p_at_top5": precision_at_top(search, retrain, 0.05), "br_at_0_5": best_rank_at_top(search, retrain, 0.005)}
    if "params" in sampled.columns and pd.to_numeric(sampled["params"], errors="coerce").notna().all():
        out["params_tau"] = kendall_tau(sampled["params"].to_numpy(float), retrain)
    accs = sampled["retrain_accs"] if "retrain_accs" in sampled.columns else None
    if accs is not None and accs.notna().all():
        seeds = [[float(a) for a in str(v).split(";")] for v in accs]
        if all(len(s) >= 2 for s in seeds):
            ceiling = rank_correlations([s[0] for s in seeds], [s[1] for s in seeds], bootstrap, seed)
            out["noise_ceiling_tau"] = ceiling["kendall_tau"]
            out["noise_ceiling_tau_lo"] = ceiling.get("kendall_tau_lo", float("nan"))
            out["noise_ceiling_tau_hi"] = ceiling.get("kendall_tau_hi", float("nan"))
    return out


def picked_table(c: Collection) -> pd.DataFrame:
    """Rank (1 = best) of each method's pick by retrain accuracy among its sampled architectures,
    and its NAS-Bench-201 rank over the whole table where the experiment used ground truth."""
    if c.consistency.empty:
        return pd.DataFrame()
    rows = []
    for _, table in c.consistency.groupby("path", sort=True):
        picked = table[table["picked"].astype(bool)]
        if picked.empty:
            continue
        p = picked.iloc[0]
        sampled = table[table["sampled"].astype(bool)]
        rows.append(
            {
                **{g: p[g] for g in EXPERIMENT},
                "seed": p["seed"],
                "picked_arch": p["arch"],
                "search_acc": p["search_acc"],
                "retrain_acc": p["retrain_acc"],
                "rank_among_sampled": int((sampled["retrain_acc"] > p["retrain_acc"]).sum()) + 1,
                "sampled": len(sampled),
                "better_than_median": bool(p["retrain_acc"] > sampled["retrain_acc"].median()),
                "gt_rank": p.get("gt_rank") if pd.notna(p.get("gt_rank", float("nan"))) else None,
            }
        )
    return pd.DataFrame(rows)
