"""analysis/report.py on a folder of synthetic run records, broken ones included, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from conftest import ROOT
from entry_process import run_script

HOUR = 3600.0


def phase(name: str, hours: float, epochs: int = 1, mem: int = 2**30, counted: bool = True) -> dict:
    return {
        "name": name,
        "wall_s": hours * HOUR,
        "device": "cpu",
        "num_devices": 1,
        "device_hours": hours,
        "peak_mem_bytes": mem,
        "epochs": epochs,
        "images": 1000,
        "counted": counted,
    }


def write_run(folder: Path, method: str, one_stage: bool, phases: list[dict], seed: int = 0, **fields) -> None:
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    summary = {
        "method": method,
        "estimator": method,
        "space": "shufflenet",
        "data": "fashion_mnist",
        "scale": "cpu",
        "seed": seed,
        "one_stage": one_stage,
        "budget": {"name": "cpu"},
        "status": "complete",
        "arch": "0,1,2,3",
        "search_acc": 0.7,
        "final_acc": 0.9,
        "params": 2_000_000,
        "flops": 30_000_000,
        "phases": phases,
        "total_device_hours": sum(p["device_hours"] for p in phases if p["counted"]),
        "peak_mem_bytes": max(p["peak_mem_bytes"] for p in phases),
        "device": "cpu",
        **fields,
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def write_experiment(folder: Path, method: str, search: list[float], retrain: list[float], picked: int) -> None:
    folder.mkdir(parents=True)
    result = {
        "kind": "consistency",
        "status": "complete",
        "method": method,
        "estimator": method,
        "space": "shufflenet",
        "data": "fashion_mnist",
        "scale": "cpu",
        "seed": 0,
        "budget": {"name": "cpu"},
        "protocol": {"sampling": "uniform", "retrain_score": "retrained"},
        "picked_arch": f"a{picked}",
    }
    (folder / "consistency.json").write_text(json.dumps(result))
    rows = [
        {"arch": f"a{i}", "sampled": True, "picked": i == picked, "search_acc": s, "retrain_acc": r}
        for i, (s, r) in enumerate(zip(search, retrain, strict=True))
    ]
    pd.DataFrame(rows).to_csv(folder / "consistency.csv", index=False)


SPOS_SEARCH = [0.50, 0.62, 0.55, 0.70, 0.58, 0.66, 0.52, 0.61, 0.69, 0.57]
SPOS_RETRAIN = [0.88, 0.90, 0.91, 0.89, 0.87, 0.92, 0.90, 0.86, 0.91, 0.88]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    write_run(root / "0_dsnas", "dsnas", True, [phase("search", 0.1, 2, 2**30), phase("finetune", 0.2, 4)])
    for seed, retrain_h in ((0, 0.3), (1, 0.5)):
        phases = [phase("search", 0.15, 2, 3 * 2**29), phase("select", 0.05), phase("retrain", retrain_h, 6)]
        phases.append(phase("eval_search", 0.01, counted=False))
        write_run(root / f"1_spos_{seed}", "spos", False, phases, seed=seed, final_acc=0.91 + 0.01 * seed)
    write_experiment(root / "consistency" / "spos", "spos", SPOS_SEARCH, SPOS_RETRAIN, picked=3)
    write_experiment(root / "consistency" / "dsnas", "dsnas", SPOS_RETRAIN, SPOS_RETRAIN, picked=5)
    # broken records: every one must be listed with its reason and left out
    (root / "2_killed" / ".hydra").mkdir(parents=True)
    (root / "3_truncated").mkdir()
    (root / "3_truncated" / "summary.json").write_text('{"method": "snas", "status": "compl')
    write_run(root / "4_failed", "darts", False, [phase("search", 0.2)], status="failed")
    write_run(root / "5_old", "gdas", False, [phase("search", 0.2)])
    old = json.loads((root / "5_old" / "summary.json").read_text())
    del old["final_acc"]
    (root / "5_old" / "summary.json").write_text(json.dumps(old))
    write_experiment(root / "consistency" / "partial", "spos", [0.1, 0.2, 0.3], [0.4, 0.5, 0.6], picked=0)
    running = {"status": "running", "rows_done": 2}
    (root / "consistency" / "partial" / "consistency.json").write_text(json.dumps(running))
    return root


def report(*args: str) -> subprocess.CompletedProcess:
    return run_script(ROOT / "analysis" / "report.py", *args, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def made(sweep: Path) -> Path:
    done = report(str(sweep), "--bootstrap", "400")
    assert done.returncode == 0, done.stderr
    assert "3 runs, 2 consistency experiments, 5 skipped" in done.stdout
    return sweep / "report"


def test_broken_records_are_listed_with_reasons(made: Path) -> None:
    skipped = pd.read_csv(made / "skipped.csv").set_index("path")["reason"]
    reasons = {Path(p).name: r for p, r in skipped.items()}
    assert set(reasons) == {"2_killed", "3_truncated", "4_failed", "5_old", "partial"}
    assert "did not finish" in reasons["2_killed"]
    assert "not valid JSON" in reasons["3_truncated"]
    assert "'failed'" in reasons["4_failed"]
    assert "final_acc" in reasons["5_old"]
    assert "after 2 architectures" in reasons["partial"]
    assert "4_failed" in (made / "report.md").read_text()


def test_cost_table_in_the_shape_of_table_3(made: Path) -> None:
    cost = pd.read_csv(made / "cost.csv").set_index("method")
    assert cost.loc["dsnas", "stages"] == "one" and cost.loc["spos", "stages"] == "two"
    # dsnas: search 0.1 + finetune 0.2 (search-from-search counts as search), nothing retrained
    assert cost.loc["dsnas", "search_device_hours"] == pytest.approx(0.3)
    assert cost.loc["dsnas", "retrain_device_hours"] == 0
    assert cost.loc["dsnas", "finetune_device_hours"] == pytest.approx(0.2)
    # spos: two seeds, mean of (0.2 search + 0.3 or 0.5 retrain); uncounted evaluation left out
    assert cost.loc["spos", "seeds"] == 2
    assert cost.loc["spos", "search_device_hours"] == pytest.approx(0.2)
    assert cost.loc["spos", "retrain_device_hours"] == pytest.approx(0.4)
    assert cost.loc["spos", "total_device_hours"] == pytest.approx(0.6)
    assert cost.loc["spos", "final_acc"] == pytest.approx(0.915)
    assert cost.loc["spos", "final_acc_std"] == pytest.approx(pd.Series([0.91, 0.92]).std())
    savings = pd.read_csv(made / "savings.csv").iloc[0]
    assert (savings["one_stage"], savings["two_stage"]) == ("dsnas / dsnas", "spos / spos")
    assert savings["saving"] == pytest.approx(0.5)
    assert savings["final_acc_difference"] == pytest.approx(0.9 - 0.915)
    # spos at dsnas's 0.3 device-hours: 0.2 of search leaves 0.1; its retrain costs 0.4 for 6 epochs
    assert savings["retrain_epochs_at_equal_cost"] == pytest.approx(0.1 / (0.4 / 6))
    assert "0.3 ± " not in (made / "cost.md").read_text()  # one seed: no spread shown
    assert "0.9150 ± 0.0071" in (made / "cost.md").read_text()


def test_per_epoch_time_and_memory(made: Path) -> None:
    per_epoch = pd.read_csv(made / "per_epoch.csv").set_index("method")
    assert per_epoch.loc["dsnas", "search_epoch_s"] == pytest.approx(0.1 * HOUR / 2)
    assert per_epoch.loc["spos", "search_epoch_s"] == pytest.approx(0.15 * HOUR / 2)
    assert per_epoch.loc["spos", "search_peak_mem_mib"] == pytest.approx(1536)


def test_correlation_and_picked(made: Path) -> None:
    corr = pd.read_csv(made / "correlation.csv").set_index("method")
    expected = stats.kendalltau(SPOS_SEARCH, SPOS_RETRAIN).statistic
    assert corr.loc["spos", "kendall_tau"] == pytest.approx(expected)
    assert corr.loc["spos", "spearman_rho"] == pytest.approx(stats.spearmanr(SPOS_SEARCH, SPOS_RETRAIN).statistic)
    assert corr.loc["spos", "kendall_tau_lo"] < expected < corr.loc["spos", "kendall_tau_hi"]
    assert corr.loc["dsnas", "kendall_tau"] == pytest.approx(1.0) and corr.loc["dsnas", "n"] == 10
    picked = pd.read_csv(made / "picked.csv").set_index("method")
    # spos picked a3 (retrain 0.89): 0.90, 0.91, 0.92, 0.90, 0.91 are better -> rank 6 of 10
    assert picked.loc["spos", "rank_among_sampled"] == 6
    assert picked.loc["dsnas", "rank_among_sampled"] == 1


def test_every_table_and_figure_is_written(made: Path) -> None:
    for name in ("cost", "savings", "per_epoch", "correlation", "picked", "skipped"):
        assert (made / f"{name}.md").read_text().startswith("## ")
        assert (made / f"{name}.csv").exists()
    for name in ("runs", "phases", "consistency"):
        assert len(pd.read_csv(made / f"{name}.csv")) > 0
    for name in ("per_epoch", "consistency", "cost", "device_hours"):
        for suffix in ("png", "pdf"):
            assert (made / "figures" / f"{name}.{suffix}").stat().st_size > 1000
    text = (made / "report.md").read_text()
    assert "![correlation](figures/consistency.png)" in text and "tau" in text


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    missing = report(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "is not a folder" in missing.stderr
    empty = report(str(tmp_path))
    assert empty.returncode == 2 and "no run records" in empty.stderr and "Traceback" not in empty.stderr
    bad = report(str(tmp_path), "--top-fraction", "0")
    assert bad.returncode == 2 and "--top-fraction" in bad.stderr
