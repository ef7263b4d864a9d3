"""NAS-Bench-201's zero-training baselines (R-EA, REINFORCE, random) on the benchmark's table."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_entry, tiny_space
from methods.table_baselines import mutate_one_edge, random_search, regularized_evolution, reinforce_policy
from nasbench.nb201_truth import SHIPPED_TABLE as TABLE
from nasbench.nb201_truth import load_ground_truth


def _ops_sum(arch) -> float:
    return sum(arch) / 24  # a reward whose optimum (4, 4, 4, 4, 4, 4) hill-climbing finds


def test_mutation_changes_exactly_one_edge_to_another_op() -> None:
    space, gen = tiny_space("nb201"), torch.Generator().manual_seed(0)
    for _ in range(200):
        parent = space.sample(gen)
        child = mutate_one_edge(space, parent, gen)
        assert sum(a != b for a, b in zip(parent, child)) == 1


def test_regularized_evolution_climbs_where_random_search_does_not() -> None:
    space = tiny_space("nb201")
    evolved = [regularized_evolution(space, _ops_sum, 200, torch.Generator().manual_seed(s)) for s in range(3)]
    drawn = [random_search(space, _ops_sum, 200, torch.Generator().manual_seed(s)) for s in range(3)]
    assert all(r["queries"] == 200 for r in evolved + drawn)
    assert statistics.mean(r["reward"] for r in evolved) > statistics.mean(r["reward"] for r in drawn)
    assert max(r["reward"] for r in evolved) == 1.0  # the optimum


def test_reinforce_policy_learns_the_rewarded_op() -> None:
    space, seen = tiny_space("nb201"), []

    def reward(arch) -> float:
        seen.append(sum(k == 3 for k in arch) / 6)
        return seen[-1]

    result = reinforce_policy(space, reward, 400, torch.Generator().manual_seed(0), lr=0.05)
    assert statistics.mean(seen[-50:]) > statistics.mean(seen[:50]) + 0.3
    assert result["reward"] == max(seen)  # the best sampled cell, as the official final version


def test_the_12_epoch_reward_is_the_tables_column() -> None:
    truth = load_ground_truth(TABLE)
    frame = pd.read_csv(TABLE).set_index("arch_str")
    arch = frame.index[7]
    assert truth.accuracy(arch, "cifar10", "valid12") == pytest.approx(frame.loc[arch, "cifar10_valid_acc_12"] / 100)


def test_baselines_command_writes_runs_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = (f"out={out}", "seeds=2", "queries=30")  # ground_truth=auto: the shipped table
    proc = run_entry("nb201_baselines.py", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["algo"], r["seed"]) for r in rows] == [(a, s) for a in ("rea", "reinforce", "random") for s in "01"]
    truth = load_ground_truth(TABLE)
    for r in rows:
        assert float(r["test_acc_200"]) == pytest.approx(truth.accuracy(r["arch"], "cifar10"))
        assert float(r["reward_valid12"]) == pytest.approx(truth.accuracy(r["arch"], "cifar10", "valid12"))
        assert int(r["queries"]) == 30
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["algos"]) == {"rea", "reinforce", "random"} and summary["reward"] == "cifar10_valid_acc_12"
    again = run_entry("nb201_baselines.py", *args)  # the same folder: refused, nothing overwritten
    assert again.returncode != 0 and again.stderr.strip().splitlines() == [
        f"error: {out} already holds runs.csv; give another out= (nothing was overwritten)"
    ]
    missing = run_entry("nb201_baselines.py", "ground_truth=null", f"out={tmp_path / 'x'}")
    assert missing.returncode != 0 and missing.stderr.strip().splitlines() == [
        "error: give ground_truth=auto (the shipped table), a NAS-Bench-201 CSV or an official .pth file"
    ]
    assert not (tmp_path / "x").exists()
