"""The published NAS-Bench-201 ranking protocols and the measures they report beside tau. Pure
pandas/numpy on the benchmark's table (the columns of nasbench/tables/nb201_accuracies.csv.gz), so
that they can be checked against the shipped table.

- :func:`unique_cells`: one cell per isomorphism class (the table's ``unique_str``; Ning et al.,
  NeurIPS 2021, rank all 6,466 of them);
- :func:`binned_sample`: the accuracy range split into ``bins`` equal bins, the best cell of each
  non-empty bin (SUMNAS, DYNAS: 400 bins, "320 cells" as published);
- :func:`precision_at_top`: P@top-p, the share of the supernet's top p among the true top p;
- :func:`best_rank_at_top`: BR@p, the best true rank (0 = the best cell of the set, as a fraction
  of the set) among the supernet's top p;
- :func:`noise_ceiling`: the rank agreement of the ground truth with itself across seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.correlation import kendall_tau


def unique_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The first cell (in table order) of every isomorphism class (``unique_str``)."""
    return table.drop_duplicates("unique_str", keep="first")


def binned_sample(table: pd.DataFrame, column: str, bins: int = 400) -> pd.DataFrame:
    """The best cell of each non-empty bin when ``column``'s range [min, max] is cut into ``bins``
    equal bins (the maximum falls in the last bin); ties within a bin go to the first in order."""
    acc = table[column].to_numpy(dtype=float)
    low, high = float(np.nanmin(acc)), float(np.nanmax(acc))
    width = (high - low) / bins if high > low else 1.0
    index = np.minimum(((acc - low) / width).astype(int), bins - 1)
    frame = table.assign(_bin=index, _order=np.arange(len(table)))
    best = frame.sort_values([column, "_order"], ascending=[False, True]).drop_duplicates("_bin")
    return best.sort_values("_order").drop(columns=["_bin", "_order"])


def _top(values: np.ndarray, fraction: float) -> np.ndarray:
    k = max(1, math.ceil(fraction * len(values)))
    return np.argsort(-values, kind="stable")[:k]


def precision_at_top(score: Sequence[float], truth: Sequence[float], fraction: float = 0.05) -> float:
    """|supernet's top fraction ∩ true top fraction| / k, k = ceil(fraction x n) (at least 1)."""
    s, t = np.asarray(score, dtype=float), np.asarray(truth, dtype=float)
    chosen, best = set(_top(s, fraction).tolist()), set(_top(t, fraction).tolist())
    return len(chosen & best) / len(best)


def best_rank_at_top(score: Sequence[float], truth: Sequence[float], fraction: float = 0.005) -> float:
    """The best true rank among the supernet's top fraction, as a fraction of the set
    (0: it holds the true best; ranks count from 0, ties by order)."""
    s, t = np.asarray(score, dtype=float), np.asarray(truth, dtype=float)
    rank = np.empty(len(t), dtype=int)
    rank[np.argsort(-t, kind="stable")] = np.arange(len(t))
    return float(rank[_top(s, fraction)].min()) / len(t)


def noise_ceiling(seeds: pd.DataFrame) -> dict[str, float]:
    """Kendall tau between every pair of seed columns of ``seeds`` (rows: architectures), their
    mean, and the Spearman-Brown estimate for the mean of all seeds is left to the caller."""
    columns = list(seeds.columns)
    if len(columns) < 2:
        raise ValueError("a noise ceiling needs at least two seeds per architecture")
    taus = [
        kendall_tau(seeds[a].to_numpy(float), seeds[b].to_numpy(float))
        for i, a in enumerate(columns)
        for b in columns[i + 1 :]
    ]
    return {"seed_pairs": len(taus), "seed_tau_mean": float(np.mean(taus)), "seed_tau_min": float(np.min(taus))}
