"""experiments/compare.py end to end: a straight-through Gumbel estimator with a
constant temperature, written outside the package, compared with a built-in one under one method,
budget and seed at tiny scale; runs, bench rows and one report with a row per estimator."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_entry, write_estimator_plugin

pytestmark = pytest.mark.slow  # whole runs, a bench and a pytest run of the contract tests

ST_CONST = '''
"""Straight-through Gumbel with a constant temperature (GDAS's estimator without its schedule)."""
import torch

from methods.estimators.base import ESTIMATORS, Estimator, free_flags, sample_gumbel
from nasbench.supernet import Selection


@ESTIMATORS.register("st_const")
class STConst(Estimator):
    name = "st_const"

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__(tau=tau)
        self.tau = tau

    def sample(self, arch, generator, device):
        logits = arch.logits()  # masked candidates at -inf: never drawn
        soft = torch.softmax((logits + sample_gumbel(logits.shape, generator)) / self.tau, dim=-1)
        index = soft.detach().argmax(-1)
        hard = torch.zeros_like(soft).scatter_(-1, index[:, None], 1.0)
        active = [[int(k)] for k in index.tolist()]
        for i, k in arch.fixed.items():
            active[i] = [k]
        return Selection(active=active, weights=(hard - soft.detach() + soft).to(device), weighted=free_flags(arch))
'''


def write_plugin(folder: Path) -> Path:
    return write_estimator_plugin(folder, "st_const", ST_CONST, "name: st_const\nmodule: st_const\ntau: 1.0\n")


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("compare")
    plugin = write_plugin(tmp / "my_nas")
    out = tmp / "cmp"
    proc = run_entry(
        "compare.py",
        "estimator=st_const,dsnas",
        "space=nb201",
        "scale=tiny",
        "progress=false",
        f"out={out}",
        f"hydra.searchpath=[file://{plugin / 'conf'}]",
        env={"PYTHONPATH": str(plugin)},
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_compare_runs_benches_and_reports_each_estimator(compared) -> None:
    out, proc = compared
    summaries = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/summary.json"))]
    assert [(s["method"], s["estimator"]) for s in summaries] == [("dsnas", "st_const"), ("dsnas", "dsnas")]
    assert {s["budget"]["name"] for s in summaries} == {"tiny"} and {s["seed"] for s in summaries} == {0}
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == [
        "0_dsnas_st_const_nb201_seed0",
        "1_dsnas_dsnas_nb201_seed0",
    ]
    bench = pd.read_csv(out / "bench.csv").set_index("method")
    assert set(bench.index) == {"child", "dsnas/st_const", "dsnas/dsnas"}
    assert bench["error"].isna().all() and (bench.loc[["dsnas/st_const", "dsnas/dsnas"], "time_ratio"] > 0).all()
    assert set(bench["space"]) == {"nb201"}
    cost = pd.read_csv(out / "report" / "cost.csv")
    assert sorted(cost["estimator"]) == ["dsnas", "st_const"] and (cost["seeds"] == 1).all()
    report = (out / "report" / "report.md").read_text()
    assert "dsnas/st_const" in report and "Showing space nb201, scale tiny, budget tiny" in report
    for figure in ("cost", "alpha", "step_cost"):
        assert (out / "report" / "figures" / f"{figure}.png").stat().st_size > 1000
    assert "compare: done" in proc.stdout


def test_compare_refuses_before_running(tmp_path: Path) -> None:
    cases = {
        ("estimator=dsnas,reinforce",): "method=dsnas cannot compare reinforce",
        ("estimator=nosuch",): "unknown estimator 'nosuch'",
        ("method=dsnas,snas", "estimator=dsnas"): "give one method",
        ("space=nb201",): "give the estimators to compare",
    }
    for args, message in cases.items():
        proc = run_entry("compare.py", *args, f"out={tmp_path / 'cmp'}", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "cmp").exists() and not (tmp_path / "outputs").exists()


def contract_tests(plugin: Path, module: str) -> object:
    """The documented command: the suite's estimator contract tests on an outside estimator."""
    import subprocess
    import sys

    from conftest import ROOT

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "0",  # in this process: a few tests, no pytest-xdist workers
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_estimators.py",
            "--estimator-module",
            module,
            "-k",
            "st_const",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(plugin)},
    )


def test_contract_tests_run_on_an_outside_estimator_and_catch_an_ignored_mask(tmp_path: Path) -> None:
    good = contract_tests(write_plugin(tmp_path / "good"), "st_const")
    assert good.returncode == 0 and " passed" in good.stdout and "2 passed" in good.stdout, good.stdout[-2000:]
    bad = tmp_path / "bad"
    write_plugin(bad)
    source = (bad / "st_const.py").read_text()
    (bad / "st_const.py").write_text(source.replace("logits = arch.logits()", "logits = arch.alpha"))
    caught = contract_tests(bad, "st_const")
    assert caught.returncode == 1, caught.stdout[-2000:]
    assert "FAILED tests/test_estimators.py::test_masks_fixed_decisions_and_op_counts[st_const]" in caught.stdout
