"""The shared budget, impossible method x estimator combinations, and sweeps with launchers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_entry


def one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=darts", "estimator=uniform"], "method darts learns alpha, but estimator uniform gives alpha no"),
        (["method=spos", "estimator=dsnas"], "method spos trains its supernet without alpha"),
        (["method=snas", "estimator=reinforce"], "estimator reinforce learns from a reward on held-out batches"),
        (["method=reinforce", "estimator=softmax"], "method reinforce scores paths with a reward"),
        (["method=dsnas", "estimator=reinforce"], "use method=reinforce"),
        (
            ["method=dsnas", "estimator=softmax", "method.flops_penalty.coef=1e-6"],
            "method.flops_penalty needs the sampled path's FLOPs; estimator softmax runs every candidate",
        ),
        (
            ["method=darts", "estimator=binary_gate", "method.second_order=true"],
            "method.second_order=true differentiates the validation loss through alpha",
        ),
        (["method=proxyless", "+method.lr=0.5"], "method proxyless sets method.lr, which belong to the shared budget"),
        (["budget.retrain_epochs=0", "method=spos"], "retrain_epochs=0: a two-stage method must retrain"),
        (["budget.valid_fraction=1.5"], "valid_fraction=1.5: must lie strictly between 0 and 1"),
        (["budget.scored_archs=0", "method=random"], "scored_archs=0: must be at least 1"),
        (["method=proxyless", "method.alpha_every=0"], "method.alpha_every=0: must be at least 1"),
        (["budget=huge"], "unknown budget 'huge'; choose one of: cpu, darts, nb201, paper, tiny"),
        (["precision=fp16"], "unknown precision 'fp16'; choose one of: auto, fp32, bf16"),
        (["space=nb201", "arch=x"], None),  # run.py has no arch option: Hydra's own error, still no traceback
    ],
)
def test_impossible_combinations_give_one_line(overrides, message, tmp_path: Path) -> None:
    proc = run_entry("run.py", "scale=tiny", "progress=false", f"hydra.run.dir={tmp_path / 'run'}", *overrides)
    if message is None:
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        return
    assert message in one_line_error(proc)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_budget_is_one_config_for_every_method(tmp_path: Path) -> None:
    """Two methods under one budget override run with identical numbers, recorded in summary.json."""
    summaries = []
    for method in ("dsnas", "random"):
        run_dir = tmp_path / method
        proc = run_entry(
            "run.py",
            f"method={method}",
            "scale=tiny",
            "budget.batch_size=32",
            "budget.search_epochs=1",
            "budget.retrain_epochs=1",
            "budget.finetune_epochs=1",
            "progress=false",
            f"hydra.run.dir={run_dir}",
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        summaries.append(json.loads((run_dir / "summary.json").read_text()))
    a, b = (s["budget"] for s in summaries)
    assert a == b and a["batch_size"] == 32 and a["name"] == "tiny"
    search = [next(p for p in s["phases"] if p["name"] == "search") for s in summaries]
    assert search[0]["images"] == search[1]["images"] == search[0]["steps"] * 32


def test_budget_follows_scale_unless_given(tmp_path: Path) -> None:
    proc = run_entry("run.py", "scale=tiny", "budget=cpu", "--cfg", "job", "--resolve")
    assert proc.returncode == 0, proc.stderr
    assert "batch_size: 128" in proc.stdout and "name: tiny" in proc.stdout


def test_parallel_sweep_writes_separate_complete_records(tmp_path: Path) -> None:
    """hydra/launcher=local_parallel (joblib, separate processes): two jobs at once."""
    proc = run_entry(
        "run.py",
        "-m",
        "hydra/launcher=local_parallel",
        "method=dsnas,spos",
        "scale=tiny",
        "budget.search_epochs=1",
        "budget.finetune_epochs=1",
        "budget.retrain_epochs=1",
        "progress=false",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert [p.parent.name for p in summaries] == ["0_dsnas_dsnas_shufflenet_seed0", "1_spos_uniform_shufflenet_seed0"]
    assert [json.loads(p.read_text())["method"] for p in summaries] == ["dsnas", "spos"]
    assert all(json.loads(p.read_text())["status"] == "complete" for p in summaries)


def test_slurm_launcher_config_composes() -> None:
    proc = run_entry("run.py", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert proc.returncode == 0, proc.stderr
    assert "SlurmLauncher" in proc.stdout and "partition: gpu" in proc.stdout and "gpus_per_node: 1" in proc.stdout
