"""Rank statistics and their bootstrap intervals against scipy and against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis.correlation import precision_at_k, rank_correlations, top_k, top_tau


def correlated(n: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    retrain = rng.uniform(0.8, 0.95, n)
    return retrain + rng.normal(0, noise, n), retrain


@pytest.mark.parametrize("noise", [0.0, 0.01, 0.05, 1.0])
def test_point_values_equal_scipy(noise: float) -> None:
    search, retrain = correlated(30, noise)
    search[3] = search[4]  # a tie: tau-b, not tau-a
    result = rank_correlations(search, retrain, bootstrap=0)
    assert result["kendall_tau"] == pytest.approx(stats.kendalltau(search, retrain, variant="b").statistic)
    assert result["spearman_rho"] == pytest.approx(stats.spearmanr(search, retrain).statistic)
    assert result["n"] == 30 and result["k"] == 6 and "kendall_tau_lo" not in result


def test_known_answers() -> None:
    x = np.arange(10.0)
    same = rank_correlations(x, x, bootstrap=200)
    for name in ("kendall_tau", "spearman_rho", "top_tau", "precision_at_k", "kendall_tau_lo", "kendall_tau_hi"):
        assert same[name] == pytest.approx(1.0), name  # every resample keeps the order
    reverse = rank_correlations(x, -x, bootstrap=200)
    for name in ("kendall_tau", "spearman_rho", "kendall_tau_hi"):
        assert reverse[name] == pytest.approx(-1.0), name
    assert reverse["precision_at_k"] == 0.0


def test_top_tau_and_precision_look_at_the_best_only() -> None:
    # a good overall order whose top 20% (the 4 best of 20 by retrain) is exactly reversed
    retrain = np.arange(20.0)
    search = retrain.copy()
    search[16:] = search[16:][::-1]
    result = rank_correlations(search, retrain, bootstrap=0)
    assert result["kendall_tau"] > 0.9
    assert result["top_tau"] == pytest.approx(-1.0)
    assert result["precision_at_k"] == 1.0  # the same 4, in another order
    assert top_tau(search, retrain, 0.2) == pytest.approx(-1.0)
    # by hand: top-3 by search is {0, 1, 2}, by retrain {0, 1, 3}
    assert precision_at_k(np.array([9, 8, 7, 1, 0.0]), np.array([9, 8, 1, 7, 0.0]), 3) == pytest.approx(2 / 3)
    assert top_k(20, 0.2) == 4 and top_k(5, 0.2) == 2 and top_k(3, 1.0) == 3


@pytest.mark.parametrize("name,statistic", [("kendall_tau", "kendall"), ("spearman_rho", "spearman")])
def test_bootstrap_interval_agrees_with_scipy(name: str, statistic: str) -> None:
    search, retrain = correlated(40, 0.02, seed=1)
    mine = rank_correlations(search, retrain, bootstrap=3000, seed=0)

    def stat(x: np.ndarray, y: np.ndarray) -> float:
        if statistic == "kendall":
            return stats.kendalltau(x, y, variant="b").statistic
        return stats.spearmanr(x, y).statistic

    ref = stats.bootstrap(
        (search, retrain),
        stat,
        paired=True,
        vectorized=False,
        n_resamples=3000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(1),
    ).confidence_interval
    # two independent Monte Carlo estimates of the same percentiles
    assert mine[f"{name}_lo"] == pytest.approx(ref.low, abs=0.04)
    assert mine[f"{name}_hi"] == pytest.approx(ref.high, abs=0.04)
    assert mine[f"{name}_lo"] < mine[name] < mine[f"{name}_hi"]


def test_bootstrap_is_reproducible_and_interval_shrinks_with_n() -> None:
    a = rank_correlations(*correlated(20, 0.02), bootstrap=300, seed=5)
    assert a == rank_correlations(*correlated(20, 0.02), bootstrap=300, seed=5)
    wide = rank_correlations(*correlated(15, 0.02), bootstrap=500)
    narrow = rank_correlations(*correlated(300, 0.02), bootstrap=500)
    assert narrow["kendall_tau_hi"] - narrow["kendall_tau_lo"] < wide["kendall_tau_hi"] - wide["kendall_tau_lo"]


def test_constant_side_gives_nan_not_a_crash() -> None:
    result = rank_correlations([0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4], bootstrap=50)
    assert np.isnan(result["kendall_tau"]) and np.isnan(result["kendall_tau_lo"])
    with pytest.raises(ValueError, match="equally long"):
        rank_correlations([1, 2, 3], [1, 2])
