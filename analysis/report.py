"""Collect every run record under a folder and write the report: tables and figures.

    python analysis/report.py multirun/2026-11-22_17-26-31            # a sweep
    python analysis/report.py outputs --out report --bootstrap 2000     # every run under outputs/

Writes into ``--out`` (default ``<folder>/report``): ``report.md`` (everything, figures
embedded); each table as Markdown and CSV (cost, savings, per_epoch, correlation, picked,
skipped), the tidy ``runs.csv``, ``phases.csv`` and ``consistency.csv``; each figure as PNG and
PDF under ``figures/``. Accuracies are fractions. Incomplete or broken records are listed in
``skipped`` and left out; they never stop the report. Reads files only (no torch).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python analysis/report.py` works from a checkout without install
    sys.path.insert(0, str(ROOT))

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import figures, tables  # noqa: E402
from analysis.lab import bias_variance_figure, error_curve_figure, lab_table  # noqa: E402
from analysis.records import Collection, collect  # noqa: E402

TITLES = {
    "splits": "Rows split because their configurations differ",
    "cost": "Cost and accuracy (the shape of the DSNAS paper's Table 3)",
    "savings": "Total device-hours saved by each one-stage method against each two-stage one",
    "per_epoch": "Search cost per epoch",
    "correlation": "Search-stage vs retrain accuracy: rank correlation (95% bootstrap intervals)",
    "picked": "Where each method's pick ranks after retraining",
    "step_cost": "Per-step cost against the stand-alone child (experiments/bench.py)",
    "lab": "Estimator lab: bias, noise and cost against the exact gradient (experiments/estimator_lab.py)",
    "skipped": "Skipped records",
}
NOTES = {
    "lab": (
        "Per alpha point and estimator, over `samples` per-sample gradients on one fixed batch and fixed weights:"
        " `cos` of their mean to the exact gradient of E_Z[L(Z)]; `rel_bias` = |E g - exact| / |exact| with the"
        " mean's noise taken out; `rel_std` = per-sample noise / |exact|; `relaxation_cos`: the relaxed"
        " objective's gradient against the exact one, `relaxed_cos`: the estimator's mean against that relaxed"
        " gradient; `cost_vs_path`: time per sample / one single-path forward+backward; `ops_run`, `ops_probed`:"
        " ops run per free decision in the forward, recomputed in the backward. `_se`: bootstrap standard errors."
    ),
    "splits": (
        "Runs of one method and estimator on one space, data set, scale and budget are averaged only when every"
        " other configuration key agrees (the seed and bookkeeping keys aside). These groups had runs that differ"
        " in the keys listed, so each distinct value is a row of its own (column `variant`)."
    ),
    "cost": (
        "One row per (space, data, scale, budget, method, estimator, variant): mean ± std over its runs; `seeds`"
        " counts distinct seeds, `runs` the records. `mmacs`: millions of multiply-accumulates per image."
    ),
}


def fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub table (no extra dependency). A column's ``_std`` merges into "mean ± std" and its
    ``_lo`` / ``_hi`` into "value [lo, hi]"."""
    if df.empty:
        return "_none_\n"
    df = df.copy()
    for col in [c for c in df.columns if c.endswith("_std")]:
        base = col[: -len("_std")]
        if base in df.columns:
            pairs = zip(df[base], df[col], strict=True)
            df[base] = [fmt(m) + (f" ± {fmt(s)}" if pd.notna(s) else "") for m, s in pairs]
        df = df.drop(columns=col)
    for col in [c for c in df.columns if c.endswith("_lo")]:
        base = col[: -len("_lo")]
        if base in df.columns and f"{base}_hi" in df.columns:
            triples = zip(df[base], df[col], df[f"{base}_hi"], strict=True)
            df[base] = [f"{fmt(v, 3)} [{fmt(lo, 2)}, {fmt(hi, 2)}]" for v, lo, hi in triples]
            df = df.drop(columns=[col, f"{base}_hi"])
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_figure(fig: plt.Figure, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "pdf"):
        fig.savefig(folder / f"{name}.{suffix}", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{name}.png"


def caption(name: str, df: pd.DataFrame) -> str:
    """The line under a table's title: what it groups, and its space, scale, budget, data and seeds."""
    lines = [NOTES[name]] if name in NOTES else []
    if not df.empty and "space" in df.columns:
        lines.append(f"Showing {figures.context(df)}.")
    return "".join(f"{line}\n\n" for line in lines)


def build_tables(c: Collection, args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    cost = tables.cost_table(c)
    return {
        "splits": c.splits,
        "cost": cost,
        "savings": tables.savings_table(cost),
        "per_epoch": tables.per_epoch_table(c),
        "correlation": tables.correlation_table(c, args.bootstrap, args.seed, args.top_fraction, args.k),
        "picked": tables.picked_table(c),
        "step_cost": tables.step_cost_table(c),
        "lab": lab_table(c.lab),
        "skipped": c.skipped,
    }


def write_report(c: Collection, out: Path, args: argparse.Namespace) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    made = build_tables(c, args)
    tidy = {"runs": c.runs, "phases": c.phases, "consistency": c.consistency, "alpha": c.alpha, "sparsity": c.sparsity}
    for name, df in {**made, **tidy}.items():
        df.to_csv(out / f"{name}.csv", index=False)
    shown = {k: v.drop(columns=["path"], errors="ignore") for k, v in made.items()}
    if not made["step_cost"].empty:
        shown["step_cost"] = made["step_cost"].assign(
            source=[os.path.relpath(p, c.root) for p in made["step_cost"]["source"]]
        )
    shown["skipped"] = made["skipped"].assign(path=[os.path.relpath(p, c.root) for p in made["skipped"]["path"]])
    for name, df in shown.items():
        (out / f"{name}.md").write_text(f"## {TITLES[name]}\n\n{caption(name, df)}{markdown(df)}")
    figs = {}
    if not made["per_epoch"].empty:
        figs["per_epoch"] = save_figure(figures.per_epoch_figure(made["per_epoch"]), out / "figures", "per_epoch")
    if not made["correlation"].empty:
        fig = figures.consistency_figure(c.consistency, made["correlation"])
        figs["correlation"] = save_figure(fig, out / "figures", "consistency")
    if not c.runs.empty:
        figs["cost"] = save_figure(figures.cost_figure(c.runs), out / "figures", "cost")
        figs["savings"] = save_figure(figures.device_hours_figure(made["cost"]), out / "figures", "device_hours")
    if len(c.runs) > 1:
        figs["front"] = save_figure(figures.front_figure(c.runs), out / "figures", "front")
    if not c.sparsity.empty and not c.runs.empty:
        figs["sparsity"] = save_figure(figures.sparsity_figure(c.runs, c.sparsity), out / "figures", "sparsity")
    if not c.alpha.empty and not c.runs.empty:
        figs["alpha"] = save_figure(figures.alpha_figure(c.runs, c.alpha), out / "figures", "alpha")
    corr = made["correlation"]
    if not corr.empty and corr.groupby(["method", "space"])["search_epochs"].nunique().max() > 1:
        figs["tau_epochs"] = save_figure(figures.tau_epochs_figure(corr), out / "figures", "tau_epochs")
    if not c.lab.empty:
        figs["lab"] = save_figure(bias_variance_figure(c.lab), out / "figures", "lab_bias_variance")
        figs["lab_error"] = save_figure(error_curve_figure(c.lab_curve), out / "figures", "lab_error")
    if not made["step_cost"].empty and made["step_cost"]["time_ratio"].notna().any():
        figs["step_cost"] = save_figure(figures.step_cost_figure(made["step_cost"]), out / "figures", "step_cost")
    parts = [
        f"# Report: {c.root}\n",
        f"{len(c.runs)} complete runs, {len(c.experiments)} consistency experiments, {len(c.skipped)} skipped."
        " Accuracies are fractions; device-hours are wall hours x devices of the counted phases.\n",
    ]
    for name, df in shown.items():
        if name in ("splits", "lab") and df.empty:
            continue
        parts.append(f"## {TITLES[name]}\n\n{caption(name, df)}{markdown(df)}")
        if name in figs:
            parts.append(f"![{name}]({figs[name]})\n")
        if name == "correlation" and "tau_epochs" in figs:
            parts.append(f"### Tau against supernet training\n\n![tau_epochs]({figs['tau_epochs']})\n")
        if name == "lab" and "lab_error" in figs:
            parts.append(f"### Error of the mean against the number of samples\n\n![lab_error]({figs['lab_error']})\n")
        if name == "cost" and "front" in figs:
            parts.append(f"### Accuracy against MACs\n\n![front]({figs['front']})\n")
        if name == "cost" and "sparsity" in figs:
            parts.append(f"### Sparsity over the search (DSO-NAS)\n\n![sparsity]({figs['sparsity']})\n")
        if name == "cost" and "alpha" in figs:
            parts.append(f"### alpha over the search\n\n![alpha]({figs['alpha']})\n")
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a run folder, a sweep folder, or any folder holding them")
    p.add_argument("--out", type=Path, default=None, help="where to write (default <folder>/report)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--top-fraction", type=float, default=0.2, help="the top share for top tau and precision@k")
    p.add_argument("--k", type=int, default=None, help="k of precision@k (default: the top share)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.bootstrap < 0 or not 0 < args.top_fraction <= 1 or (args.k is not None and args.k < 1):
        print("error: --bootstrap must be >= 0, --top-fraction in (0, 1] and --k >= 1", file=sys.stderr)
        return 2
    try:
        c = collect(args.folder)
    except FileNotFoundError:
        print(f"error: {args.folder} is not a folder; give the folder of a run, a sweep or of several", file=sys.stderr)
        return 2
    if c.runs.empty and c.experiments.empty and c.skipped.empty and c.lab.empty:
        what = "no summary.json, consistency.json, lab.json or .hydra/"
        print(f"error: no run records under {args.folder} ({what})", file=sys.stderr)
        return 2
    path = write_report(c, args.out or args.folder / "report", args)
    for row in c.skipped.itertuples():
        print(f"skipped {row.path}: {row.reason}", file=sys.stderr)
    for row in c.splits.itertuples():
        print(
            f"note: {row.method} / {row.estimator} on {row.space} ({row.data}, budget {row.budget_name}) has runs that"
            f" differ in {row.differing_keys}: shown as {row.rows} rows, not averaged",
            file=sys.stderr,
        )
    print(f"{len(c.runs)} runs, {len(c.experiments)} consistency experiments, {len(c.skipped)} skipped -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
