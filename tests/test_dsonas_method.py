"""method=dsonas end to end on its space (tiny scale, real training): pretrain with lambda at 1,
pruning every epoch that never comes back, the record's sparsity per epoch, the final network's
MACs, BatchNorm scales fixed in search, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_entry, tiny_space
from nasbench.flops import count_params
from nasbench.records import RunRecord


def _run(run_dir: Path, *overrides: str):
    return run_entry("run.py", "scale=tiny", "progress=false", f"hydra.run.dir={run_dir}", *overrides)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("dsonas") / "run"
    proc = _run(
        run_dir,
        "method=dsonas",
        "space=dsonas",
        "budget.search_epochs=4",
        "budget.retrain_epochs=1",
        "method.pretrain_fraction=0.25",
        "method.prune_every=1",
        "method.gamma=0.01",
        "method.adaptive=flops",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_pruning_is_permanent_and_the_record_gives_sparsity_per_epoch(pruned_run: Path) -> None:
    metrics = [json.loads(line) for line in (pruned_run / "metrics.jsonl").open()]
    summary = json.loads((pruned_run / "summary.json").read_text())
    (pretrain,) = [m for m in metrics if m["phase"] == "pretrain"]
    search = [m for m in metrics if m["phase"] == "search"]
    assert len(search) == 3
    assert set(pretrain["lambdas"]) == {1.0}  # the full network, lambda fixed at 1
    for m in [pretrain, *search]:
        assert {"live_connections", "live_ops", "live_macs", "pruned_connections"} <= set(m)
    # epochs 2 and 3 of search start with a prune; a pruned lambda is 0 from then on
    assert [("pruned_now" in m) for m in search] == [False, True, True]
    counts = [m["pruned_connections"] for m in search]
    assert counts == sorted(counts) and counts[-1] > 0, counts
    pruned_after_1 = {i for i, v in enumerate(search[0]["lambdas"]) if v == 0.0}
    for m in search[1:]:
        assert all(m["lambdas"][i] == 0.0 for i in pruned_after_1 if i < len(m["lambdas"]))
    final = [float(v) for v in summary["extra"]["lambdas"]]
    arch = [int(k) for k in summary["arch"].split(",")]
    assert all(bit == 0 for bit, lam in zip(arch, final) if lam == 0.0)  # the support of lambda ...
    assert sum(arch) == summary["extra"]["final_live_connections"] > 0  # ... with dead ops removed
    # the final network's MACs and params are the retrained pruned network's
    assert summary["flops"] == summary["extra"]["final_live_macs"] < pretrain["live_macs"]
    space = tiny_space("dsonas")
    assert summary["params"] == count_params(space.build_child(space.complete(arch)))


def test_batchnorm_scales_stay_at_one_during_the_search(pruned_run: Path) -> None:
    saved = RunRecord.peek(pruned_run).load_supernet()
    scales = [v for k, v in saved["state_dict"].items() if k.endswith(".weight") and v.ndim == 1]
    assert scales and all(torch.equal(v, torch.ones_like(v)) for v in scales)
    assert saved["alpha"][:, 0].abs().sum() == 0  # none carries no lambda


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("space=nb201",),
            "error: method dsonas needs a space whose connections or ops carry scales (space=dsonas, or space=darts",
        ),
        (("estimator=dsnas",), "error: method dsonas scales every connection by a non-negative lambda"),
        (("method.adaptive=macs",), "error: method.adaptive=macs: must be one of none, flops, count"),
        (("method.prune_every=0",), "error: method.prune_every=0: must be at least 1 (epochs)"),
    ],
)
def test_bad_settings_give_one_line(overrides: tuple[str, ...], message: str, tmp_path: Path) -> None:
    args = ["method=dsonas", "space=dsonas", *overrides]
    proc = _run(tmp_path / "run", *args)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_the_report_plots_a_gamma_sweep_front_and_the_sparsity(pruned_run: Path, tmp_path: Path) -> None:
    """A second run with another gamma beside the first: the report joins them as one method's
    variants on the accuracy-MACs figure and plots what pruning kept per epoch."""
    import pandas as pd

    from analysis.report import main as report_main

    other = pruned_run.parent / "gamma_small"
    proc = _run(other, "method=dsonas", "space=dsonas", "budget.search_epochs=2", "budget.retrain_epochs=1",
                "method.gamma=0.0001")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "report"
    assert report_main([str(pruned_run.parent), "--out", str(out), "--bootstrap", "10"]) == 0
    text = (out / "report.md").read_text()
    assert "![front](figures/front.png)" in text and "![sparsity](figures/sparsity.png)" in text
    assert (out / "figures" / "front.png").stat().st_size > 0 and (out / "figures" / "sparsity.png").stat().st_size > 0
    sparsity = pd.read_csv(out / "sparsity.csv")
    assert sorted(sparsity.groupby("path").size().tolist()) == [2, 4]  # pretrain + search epochs of each run
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 and runs["variant"].fillna("").str.contains("gamma").all()


def test_the_exported_pruned_network_runs_without_the_project(pruned_run: Path, tmp_path: Path) -> None:
    """child.pt2 (torch.export) of the pruned network gives final_acc in a Python that has torch
    and nothing of this project (-I -S: no site packages but torch's folder, no cwd)."""
    import subprocess
    import sys
    import sysconfig

    from omegaconf import OmegaConf

    from conftest import ROOT
    from nasbench.data import load_data
    from test_run_e2e import PLAIN_TORCH_EVAL

    summary = json.loads((pruned_run / "summary.json").read_text())
    data = load_data(OmegaConf.load(ROOT / "experiments" / "conf" / "data" / "fashion_mnist.yaml"))
    n = summary["test_images"]
    torch.save({"x": data.test.images[:n].float() / 255, "y": data.test.labels[:n]}, tmp_path / "test.pt")
    args = [sysconfig.get_paths()["purelib"], str(pruned_run / "child.pt2"), str(tmp_path / "test.pt")]
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", PLAIN_TORCH_EVAL, *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip()) == pytest.approx(summary["final_acc"], abs=1 / n + 1e-12)
