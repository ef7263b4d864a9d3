"""Rank agreement between search-stage and retrain accuracy, with bootstrap intervals.

The protocol of the README ("Does search-stage accuracy predict retrain accuracy?"): Kendall tau-b and Spearman
rho over the sampled architectures; tau on the top 20% (the architectures whose retrain accuracy
is in the top 20%: does the supernet order the good ones, which is what a search needs?);
precision@k (the share of the k best by search-stage accuracy that are among the k best after
retraining, k = the top 20% by default). Higher accuracy is the better rank on both sides.
Intervals are percentile bootstrap intervals over architectures (pairs resampled with
replacement); a resample on which a statistic is undefined (all ties) is left out of its interval.

Reference points: weight-sharing rankings often have tau near 0 (Sciuto et al., ICLR 2020);
NAS-Bench-201's 12- vs 200-epoch tau is about 0.6-0.7 in the shared table.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

STATISTICS = ("kendall_tau", "spearman_rho", "top_tau", "precision_at_k")


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b (ties counted as in scipy's default); NaN when either side is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(x, y, variant="b").statistic)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


def top_k(n: int, fraction: float) -> int:
    """How many architectures "the top ``fraction``" holds: at least 2, so that an order exists."""
    return min(n, max(2, math.ceil(fraction * n)))


def top_tau(search: np.ndarray, retrain: np.ndarray, fraction: float = 0.2) -> float:
    """Kendall tau-b among the architectures with the top ``fraction`` of retrain accuracy."""
    best = np.argsort(-retrain, kind="stable")[: top_k(len(retrain), fraction)]
    return kendall_tau(search[best], retrain[best])


def precision_at_k(search: np.ndarray, retrain: np.ndarray, k: int) -> float:
    """|top-k by search accuracy ∩ top-k by retrain accuracy| / k."""
    by_search = set(np.argsort(-search, kind="stable")[:k].tolist())
    by_retrain = set(np.argsort(-retrain, kind="stable")[:k].tolist())
    return len(by_search & by_retrain) / k


def point_statistics(search: np.ndarray, retrain: np.ndarray, k: int, fraction: float) -> dict[str, float]:
    return {
        "kendall_tau": kendall_tau(search, retrain),
        "spearman_rho": spearman_rho(search, retrain),
        "top_tau": top_tau(search, retrain, fraction),
        "precision_at_k": precision_at_k(search, retrain, k),
    }


def rank_correlations(
    search: Sequence[float],
    retrain: Sequence[float],
    bootstrap: int = 1000,
    seed: int = 0,
    top_fraction: float = 0.2,
    k: int | None = None,
    level: float = 0.95,
) -> dict[str, float]:
    """Every statistic of the protocol, with ``<name>_lo`` / ``<name>_hi`` percentile bootstrap
    bounds (``bootstrap`` resamples; 0 gives the point values only), plus ``n`` and ``k``."""
    x, y = np.asarray(search, dtype=float), np.asarray(retrain, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two equally long lists of accuracies, got {x.shape} and {y.shape}")
    n = len(x)
    k = top_k(n, top_fraction) if k is None else int(k)
    result: dict[str, float] = {"n": n, "k": k, **point_statistics(x, y, k, top_fraction)}
    if bootstrap > 0 and n >= 3:
        rng = np.random.default_rng(seed)
        draws = {name: [] for name in STATISTICS}
        for _ in range(bootstrap):
            idx = rng.integers(0, n, n)
            for name, value in point_statistics(x[idx], y[idx], k, top_fraction).items():
                draws[name].append(value)
        tail = (1.0 - level) / 2.0 * 100.0
        for name, values in draws.items():
            finite = np.asarray(values)[np.isfinite(values)]
            lo, hi = np.percentile(finite, [tail, 100.0 - tail]) if len(finite) else (math.nan, math.nan)
            result[f"{name}_lo"], result[f"{name}_hi"] = float(lo), float(hi)
    return result
