"""The report never averages runs whose configurations differ: one row per (method,
estimator, variant), a split note naming the differing keys, true repeats in one row; alpha's
trajectory and a bench's step cost in the report. Synthetic run records, as tests/test_report.py."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from entry_process import run_script
from test_report import phase, write_run

CONFIG = {
    "method": {"name": "dsnas", "early_fix_threshold": 0.3},
    "estimator": {"name": "dsnas"},
    "space": {"name": "shufflenet"},
    "data": {"name": "fashion_mnist", "root": "/somewhere"},
    "budget": {"name": "cpu", "batch_size": 128},
    "seed": 0,
    "device": "auto",
    "precision": "auto",
}


def config(**changes: object) -> dict:
    out = copy.deepcopy(CONFIG)
    for dotted, value in changes.items():
        node = out
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return out


def add_run(root: Path, name: str, estimator: str, seed: int, cfg: dict, final_acc: float, alpha: bool = False):
    phases = [phase("search", 0.1, 2), phase("finetune", 0.2, 4)]
    write_run(root / name, "dsnas", True, phases, seed=seed, estimator=estimator, config=cfg, final_acc=final_acc)
    if alpha:
        lines = [
            {"phase": "search", "epoch": e, "alpha_probs": [[0.25 + 0.1 * e, 0.75 - 0.1 * e], [0.5, 0.5]]}
            for e in (1, 2)
        ]
        (root / name / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def make_report(root: Path) -> subprocess.CompletedProcess:
    done = run_script(ROOT / "analysis" / "report.py", str(root), "--bootstrap", "0", cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def grouped(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("groups")
    # true repeats: three seeds of the built-in estimator, one data root elsewhere (not compared)
    for seed in (0, 1, 2):
        cfg = config(seed=seed, data__root=f"/disk{seed}")
        add_run(root, f"builtin_{seed}", "dsnas", seed, cfg, 0.90 + 0.01 * seed, alpha=seed == 0)
    # a plug-in estimator, two seeds
    for seed in (0, 1):
        cfg = config(seed=seed, estimator={"name": "mine", "module": "mine", "tau": 1.0})
        add_run(root, f"mine_{seed}", "mine", seed, cfg, 0.80, alpha=seed == 0)
    # the built-in estimator with a method override: another row, never averaged in
    add_run(root, "override_0", "dsnas", 0, config(method__early_fix_threshold=0.2), 0.70)
    bench = pd.DataFrame(
        [
            {"round": 0, "method": "child", "step_ms": 10.0, "time_ratio": None, "mem_ratio": None, "error": None},
            {"round": 0, "method": "dsnas/mine", "step_ms": 30.0, "time_ratio": 3.0, "mem_ratio": 1.5, "error": None},
            {"round": 0, "method": "dsnas", "step_ms": 14.0, "time_ratio": 1.4, "mem_ratio": 1.1, "error": None},
        ]
    )
    bench.to_csv(root / "bench.csv", index=False)
    return root, make_report(root)


def test_estimators_and_overrides_are_separate_rows(grouped) -> None:
    root, done = grouped
    cost = pd.read_csv(root / "report" / "cost.csv")
    assert len(cost) == 3
    mine = cost[cost["estimator"] == "mine"].iloc[0]
    assert mine["seeds"] == 2 and mine["runs"] == 2 and mine["final_acc"] == pytest.approx(0.80)
    builtin = cost[(cost["estimator"] == "dsnas") & (cost["variant"] == "method.early_fix_threshold=0.3")].iloc[0]
    assert builtin["seeds"] == 3 and builtin["final_acc"] == pytest.approx(0.91)
    override = cost[cost["variant"] == "method.early_fix_threshold=0.2"].iloc[0]
    assert override["seeds"] == 1 and override["final_acc"] == pytest.approx(0.70)
    splits = pd.read_csv(root / "report" / "splits.csv")
    assert list(splits["differing_keys"]) == ["method.early_fix_threshold"] and list(splits["rows"]) == [2]
    assert "differ in method.early_fix_threshold" in done.stderr
    assert "Rows split because" in (root / "report" / "report.md").read_text()


def test_true_repeats_are_one_row(tmp_path: Path) -> None:
    for seed in (0, 1):
        add_run(tmp_path, f"r{seed}", "dsnas", seed, config(seed=seed, data__root=f"/d{seed}"), 0.9)
    add_run(tmp_path, "again", "dsnas", 1, config(seed=1), 0.9)  # the same seed run twice
    make_report(tmp_path)
    cost = pd.read_csv(tmp_path / "report" / "cost.csv")
    assert len(cost) == 1 and cost.loc[0, "seeds"] == 2 and cost.loc[0, "runs"] == 3
    assert pd.isna(cost.loc[0, "variant"])
    assert not (tmp_path / "report" / "splits.csv").read_text().strip().count("\n")


def test_titles_alpha_trajectory_and_step_cost(grouped) -> None:
    root, _ = grouped
    text = (root / "report" / "report.md").read_text()
    assert "Showing space shufflenet, scale cpu, budget cpu, data fashion_mnist" in text
    assert "![alpha](figures/alpha.png)" in text and "![step_cost](figures/step_cost.png)" in text
    alpha = pd.read_csv(root / "report" / "alpha.csv")
    assert set(alpha["epoch"]) == {1, 2} and len(alpha) == 2 * 2 * 2 * 2  # 2 runs x 2 epochs x 2 x 2
    step = pd.read_csv(root / "report" / "step_cost.csv").set_index("config")
    assert step.loc["dsnas/mine", "time_ratio"] == pytest.approx(3.0)
    for name in ("alpha", "step_cost", "cost"):
        assert (root / "report" / "figures" / f"{name}.png").stat().st_size > 1000
