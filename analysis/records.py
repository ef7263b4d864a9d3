"""Collect run records (README, "The run record") from a folder tree into tidy tables.

Works from the files alone (no torch; of the project only nasbench.contract, which imports
nothing), so records made on another machine can be analysed anywhere. A folder is a record
when it holds ``summary.json`` (experiments/run.py),
``consistency.json`` (experiments/consistency.py) or Hydra's ``.hydra/`` (a run that started).
A record that is incomplete, failed or malformed is listed in ``skipped`` with the reason and
left out of every table; it never stops the collection.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.lab import collect_lab
from analysis.variants import assign_variants, run_signature
from nasbench.contract import REQUIRED_SUMMARY_KEYS

CONSISTENCY_COLUMNS = ("arch", "sampled", "picked", "search_acc", "retrain_acc")
IDENTITY = ("method", "estimator", "space", "data", "scale", "budget_name", "seed")


@dataclass
class Collection:
    """Every complete record under a root, as tables, and what was skipped and why."""

    root: Path
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    phases: pd.DataFrame = field(default_factory=pd.DataFrame)
    experiments: pd.DataFrame = field(default_factory=pd.DataFrame)
    consistency: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))
    #: groups of runs split into several rows because their configurations differ (analysis/variants.py)
    splits: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: alpha per search epoch, tidy: path, epoch, decision, candidate, prob (metrics.jsonl's alpha_probs)
    alpha: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: per pretrain/search epoch of a sparse method (DSO-NAS): what pruning would keep (sparsity_rows)
    sparsity: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: every row of every bench.csv under the root (experiments/bench.py, experiments/compare.py)
    bench: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: every estimator-lab row and error-curve row under the root (experiments/estimator_lab.py)
    lab: pd.DataFrame = field(default_factory=pd.DataFrame)
    lab_curve: pd.DataFrame = field(default_factory=pd.DataFrame)


class Broken(Exception):
    """Why a record cannot be used (becomes a row of ``skipped``)."""


def record_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds a run record, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".hydra")
        if "lab.json" in files:  # an estimator lab's folder: analysis/lab.py reads it
            continue
        if "summary.json" in files or "consistency.json" in files or os.path.isdir(os.path.join(folder, ".hydra")):
            found.append(Path(folder))
    return sorted(found)


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except OSError as err:
        raise Broken(f"{path.name} unreadable ({err.strerror})") from None
    except ValueError:
        raise Broken(f"{path.name} is not valid JSON (a crash while writing, or edited by hand)") from None
    if not isinstance(value, dict):
        raise Broken(f"{path.name} does not hold a JSON object")
    return value


def identity(record: dict[str, Any]) -> dict[str, Any]:
    budget = record.get("budget") if isinstance(record.get("budget"), dict) else {}
    return {
        "method": record.get("method"),
        "estimator": record.get("estimator"),
        "space": record.get("space"),
        "data": record.get("data"),
        "scale": record.get("scale"),
        "budget_name": budget.get("name", record.get("scale")),
        "seed": record.get("seed"),
        "one_stage": bool(record.get("one_stage", False)),
    }


def metrics_entries(folder: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl, in order (unreadable lines and a missing file: none)."""
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def alpha_rows(folder: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """alpha's probabilities at the end of each search epoch (metrics.jsonl's ``entries``), tidy."""
    rows: list[dict[str, Any]] = []
    for entry in entries:
        probs = entry.get("alpha_probs") if entry.get("phase") == "search" else None
        if not isinstance(probs, list):
            continue
        for decision, row in enumerate(probs):
            for candidate, prob in enumerate(row):
                rows.append(
                    {
                        "path": str(folder),
                        "epoch": entry.get("epoch"),
                        "decision": decision,
                        "candidate": candidate,
                        "prob": float(prob),
                    }
                )
    return rows


SPARSITY_COLUMNS = ("live_connections", "connections", "live_ops", "live_macs", "pruned_connections")


def sparsity_rows(folder: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The network a sparse method (DSO-NAS) would keep at the end of each pretrain and search
    epoch (metrics.jsonl's live_* fields), in order, with ``step``: the epoch's place over both."""
    rows: list[dict[str, Any]] = []
    for entry in entries:
        if all(isinstance(entry.get(k), (int, float)) for k in SPARSITY_COLUMNS):
            row = {"path": str(folder), "phase": entry.get("phase"), "epoch": entry.get("epoch"), "step": len(rows) + 1}
            rows.append({**row, **{k: entry[k] for k in SPARSITY_COLUMNS}})
    return rows


def load_run(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One row of ``runs`` and its rows of ``phases`` from summary.json."""
    summary = read_json(folder / "summary.json")
    if summary.get("status") != "complete":
        raise Broken(f"status is {summary.get('status')!r}, not 'complete'")
    missing = [k for k in REQUIRED_SUMMARY_KEYS if k not in summary]
    if missing:
        raise Broken(f"summary.json lacks {', '.join(missing)}")
    phases = summary["phases"]
    if not isinstance(phases, list) or not all(isinstance(p, dict) and "name" in p for p in phases):
        raise Broken("summary.json's phases is not a list of phase records")
    ident = identity(summary)
    counted = [p for p in phases if p.get("counted", True)]
    retrain_h = sum(float(p.get("device_hours", 0.0)) for p in counted if p["name"] == "retrain")
    search = next((p for p in phases if p["name"] == "search"), None)
    row = {
        **ident,
        "path": str(folder),
        "arch": summary["arch"],
        "search_acc": float(summary["search_acc"]),
        "final_acc": float(summary["final_acc"]),
        "params": int(summary["params"]),
        "flops": int(summary["flops"]),
        "search_device_hours": sum(float(p.get("device_hours", 0.0)) for p in counted) - retrain_h,
        "retrain_device_hours": retrain_h,
        "retrain_epochs": sum(int(p.get("epochs", 0)) for p in counted if p["name"] == "retrain"),
        "finetune_device_hours": sum(float(p.get("device_hours", 0.0)) for p in counted if p["name"] == "finetune"),
        "total_device_hours": float(summary["total_device_hours"]),
        "peak_mem_bytes": int(summary["peak_mem_bytes"]),
        "search_epoch_s": float(search["wall_s"]) / search["epochs"] if search and search.get("epochs") else None,
        "search_peak_mem_bytes": int(search.get("peak_mem_bytes", 0)) if search else None,
        "device": summary.get("device"),
        "wall_s": summary.get("wall_s"),
        "threads": (summary.get("provenance") or {}).get("threads"),
        "git_commit": (summary.get("provenance") or {}).get("git_commit"),
        "signature": run_signature(summary, folder),
    }
    phase_rows = [{**ident, "path": str(folder), **p} for p in phases]
    return row, phase_rows


def load_experiment(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One row of ``experiments`` and its per-architecture table from a consistency folder."""
    result = read_json(folder / "consistency.json")
    if result.get("status") != "complete":
        done = result.get("rows_done")
        raise Broken(f"status is {result.get('status')!r}" + (f" after {done} architectures" if done else ""))
    try:
        table = pd.read_csv(folder / "consistency.csv")
    except (OSError, ValueError) as err:
        raise Broken(f"consistency.csv unreadable ({type(err).__name__})") from None
    missing = [c for c in CONSISTENCY_COLUMNS if c not in table.columns]
    if missing:
        raise Broken(f"consistency.csv lacks {', '.join(missing)}")
    for column in ("search_acc", "retrain_acc"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    if table[["search_acc", "retrain_acc"]].isna().any().any():
        raise Broken("consistency.csv has empty or non-numeric accuracies")
    ident = identity(result)
    protocol = result.get("protocol") or {}
    row = {
        **ident,
        "path": str(folder),
        "picked_arch": result.get("picked_arch"),
        "retrain_score": protocol.get("retrain_score"),
        "sampling": protocol.get("sampling"),
        "sample_seed": protocol.get("sample_seed"),
        "supernet": protocol.get("supernet"),
        "wall_s": result.get("wall_s"),
    }
    for key, value in ident.items():
        table[key] = value
    budget = result.get("budget") if isinstance(result.get("budget"), dict) else {}
    table["search_epochs"] = budget.get("search_epochs")  # the supernet's training length (tau against it)
    table["path"] = str(folder)
    return row, table


def collect(root: Path | str) -> Collection:
    """Every record under ``root``; raises FileNotFoundError when ``root`` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    runs, phases, experiments, tables, skipped, alphas, sparsity = [], [], [], [], [], [], []
    for folder in record_folders(root):
        try:
            if (folder / "consistency.json").exists():
                row, table = load_experiment(folder)
                experiments.append(row)
                tables.append(table)
            elif (folder / "summary.json").exists():
                row, phase_rows = load_run(folder)
                runs.append(row)
                phases.extend(phase_rows)
                entries = metrics_entries(folder)  # read once for both tables
                alphas.extend(alpha_rows(folder, entries))
                sparsity.extend(sparsity_rows(folder, entries))
            else:
                raise Broken("no summary.json: the run did not finish (failed, killed or still running)")
        except Broken as why:
            skipped.append({"path": str(folder), "reason": str(why)})
        except (KeyError, TypeError, ValueError) as err:
            skipped.append({"path": str(folder), "reason": f"malformed record ({type(err).__name__}: {err})"})
    signatures = [r.pop("signature") for r in runs]
    run_table, splits = assign_variants(pd.DataFrame(runs), signatures)
    lab, lab_curve = collect_lab(root)
    return Collection(
        lab=lab,
        lab_curve=lab_curve,
        root=root,
        runs=run_table,
        splits=splits,
        alpha=pd.DataFrame(alphas),
        sparsity=pd.DataFrame(sparsity),
        bench=collect_bench(root),
        phases=pd.DataFrame(phases),
        experiments=pd.DataFrame(experiments),
        consistency=pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(),
        skipped=pd.DataFrame(skipped, columns=["path", "reason"]),
    )


def collect_bench(root: Path) -> pd.DataFrame:
    """Every ``bench.csv`` under ``root`` (one per bench run; ``source`` is its folder)."""
    frames = []
    for path in sorted(root.rglob("bench.csv")):
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError):
            continue
        if {"method", "step_ms", "time_ratio"} <= set(frame.columns):
            frames.append(frame.assign(source=str(path.parent)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
