"""The published NAS-Bench-201 ranking protocols (analysis/protocols.py), on hand-made cases and
on the NAS-Bench-201 table shipped in the package."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.protocols import best_rank_at_top, binned_sample, noise_ceiling, precision_at_top, unique_cells
from nasbench.nb201_truth import SHIPPED_TABLE as TABLE


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return pd.read_csv(TABLE)


def test_the_isomorphism_classes_of_the_shipped_table_are_6466(table: pd.DataFrame) -> None:
    unique = unique_cells(table)
    assert len(table) == 15625 and len(unique) == 6466
    assert unique["unique_str"].is_unique
    assert set(unique["unique_str"]) == set(table["unique_str"])
    first = table.groupby("unique_str")["index"].min()  # the representative is the first of its class
    assert (unique.set_index("unique_str")["index"] == first.loc[unique["unique_str"]]).all()


def test_the_binned_sample_keeps_the_best_cell_of_every_non_empty_bin(table: pd.DataFrame) -> None:
    column = "cifar10_valid_acc_200"
    unique = unique_cells(table)
    sample = binned_sample(unique, column, bins=400)
    acc = unique[column].to_numpy()
    low, width = acc.min(), (acc.max() - acc.min()) / 400
    bins = np.minimum(((acc - low) / width).astype(int), 399)
    assert len(sample) == len(np.unique(bins))  # one cell per non-empty bin
    sample_bins = np.minimum(((sample[column].to_numpy() - low) / width).astype(int), 399)
    assert len(set(sample_bins.tolist())) == len(sample)
    for b, value in zip(sample_bins, sample[column]):
        assert value == acc[bins == b].max()  # the best of its bin
    assert sample[column].max() == acc.max()


def test_precision_at_top_and_best_rank_on_hand_computed_cases() -> None:
    truth = np.arange(20, 0, -1, dtype=float)  # cell 0 is the best, cell 19 the worst
    score = truth.copy()
    assert precision_at_top(score, truth, 0.1) == 1.0  # k = 2, both found
    score[[0, 1]] = [0.5, 0.4]  # the two best are scored last
    assert precision_at_top(score, truth, 0.1) == 0.0
    assert precision_at_top(score, truth, 0.2) == 0.5  # k = 4: cells 2, 3 of the true 0-3
    assert best_rank_at_top(score, truth, 0.05) == 2 / 20  # its top 1 is cell 2, true rank 2
    assert best_rank_at_top(truth, truth, 0.05) == 0.0
    assert best_rank_at_top(-truth, truth, 0.05) == 19 / 20


def test_the_noise_ceiling_of_identical_seeds_is_one_and_of_reversed_ones_minus_one() -> None:
    a = np.linspace(0, 1, 30)
    same = noise_ceiling(pd.DataFrame({"s0": a, "s1": a, "s2": a}))
    assert same == {"seed_pairs": 3, "seed_tau_mean": 1.0, "seed_tau_min": 1.0}
    flipped = noise_ceiling(pd.DataFrame({"s0": a, "s1": a[::-1]}))
    assert flipped["seed_tau_mean"] == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        noise_ceiling(pd.DataFrame({"s0": a}))


def test_the_consistency_experiment_takes_the_published_sets_from_the_ground_truth(table: pd.DataFrame) -> None:
    import sys

    from conftest import ROOT, tiny_space
    from nasbench.nb201_truth import load_ground_truth

    sys.path.insert(0, str(ROOT / "experiments"))
    from consistency_parts import sample_archs

    space, truth = tiny_space("nb201"), load_ground_truth(TABLE)
    unique = sample_archs(space, 3, 0, "unique", truth, "cifar10")
    assert len(unique) == 6466 == len({space.encode(a) for a in unique})
    classes = {truth.classes[space.encode(a)] for a in unique}
    assert len(classes) == 6466  # one cell per isomorphism class
    binned = sample_archs(space, 3, 0, "binned", truth, "cifar10")
    expected = binned_sample(unique_cells(table), "cifar10_test_acc_200", bins=400)
    assert [space.encode(a) for a in binned] == expected["arch_str"].tolist()
    assert 150 < len(binned) < 400
