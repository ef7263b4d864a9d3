"""What makes two runs comparable: the report never averages runs whose configurations differ.

Every run's configuration (summary.json's ``config``, or the older records' ``.hydra/config.yaml``)
is flattened to dotted keys. Runs of one (space, data, scale, budget, method, estimator) are
repeats only if every other key agrees too, the seed and the keys that cannot change a result
aside (:data:`NOT_COMPARED`). Where runs of one such group differ in some key (a method or
estimator override, another precision, another device, a different data set root...), the key and
its value become the run's ``variant`` ("method.second_order=True"), each variant is a row of its
own, and :func:`splits` says which groups were split and by which keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

#: keys that never separate repeats: the seed (what repeats vary), the run's bookkeeping, where the
#: data lies, and torch's thread count (recorded in provenance; README, "Reproducibility")
NOT_COMPARED = (
    "seed",
    "resume",
    "overwrite",
    "progress",
    "checkpoint",
    "threads",
    "tensorboard",
    "hydra",
    "data.root",
    "data.download",
)
BASE = ["space", "data", "scale", "budget_name", "method", "estimator"]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def compared(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_COMPARED)


def run_signature(summary: Mapping[str, Any], folder: Path) -> dict[str, str]:
    """The run's configuration as ``{dotted key: value text}``, without :data:`NOT_COMPARED`.
    ``device`` and ``precision`` are the resolved ones (``auto`` means another thing on a GPU)."""
    config = summary.get("config")
    if not isinstance(config, Mapping):
        try:
            config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            config = {}
    flat = {k: v for k, v in flatten(config).items() if compared(k)}
    for key in ("device", "precision"):
        if summary.get(key) is not None:
            flat[key] = summary[key]
    return {k: str(v) for k, v in flat.items()}


def assign_variants(runs: pd.DataFrame, signatures: list[dict[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``runs`` with a ``variant`` column, and the table of split groups (:func:`splits`)."""
    variants = [""] * len(runs)
    split_rows = []
    if runs.empty:
        return runs.assign(variant=[]), pd.DataFrame(columns=[*BASE, "differing_keys", "rows"])
    for key, index in runs.groupby(BASE, dropna=False, sort=True).groups.items():
        positions = [runs.index.get_loc(i) for i in index]
        sigs = [signatures[p] for p in positions]
        keys = sorted({k for s in sigs for k in s})
        differing = [k for k in keys if len({s.get(k, "<unset>") for s in sigs}) > 1]
        for p, s in zip(positions, sigs):
            variants[p] = "; ".join(f"{k}={s.get(k, '<unset>')}" for k in differing)
        if differing:
            rows = len({variants[p] for p in positions})
            split_rows.append({**dict(zip(BASE, key)), "differing_keys": ", ".join(differing), "rows": rows})
    out = runs.assign(variant=variants)
    return out, pd.DataFrame(split_rows, columns=[*BASE, "differing_keys", "rows"])
