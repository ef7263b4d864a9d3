"""Data-parallel runs with real torchrun processes (gloo, two CPU processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from entry_process import run_script
from nasbench import distributed
from nasbench.errors import UserError
from test_reliability import _without_timings
from test_resume import wait_for_checkpoint
from test_run_e2e import check_summary

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, tmpdir: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run([*TORCHRUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ddp")
    run_dir, tmpdir = base / "run", base / "tmp"
    tmpdir.mkdir()
    proc = torchrun(
        "experiments/run.py",
        "method=dsnas",
        "method.paths_per_step=2",  # each rank runs its own path, as the official 8-GPU search
        "space=shufflenet",
        "scale=tiny",
        "device=cpu",
        "progress=false",
        f"hydra.run.dir={run_dir}",
        tmpdir=tmpdir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, tmpdir


@pytest.mark.slow
def test_torchrun_dsnas_agrees_on_every_rank(ddp_run) -> None:
    """Alpha, every sampled path, the architecture and its search accuracy agree on both ranks;
    rank 0 alone writes the record, and rank 1's Hydra folder is gone."""
    run_dir, tmpdir = ddp_run
    summary = json.loads((run_dir / "summary.json").read_text())
    check_summary(summary, "dsnas", "shufflenet")
    dist = summary["extra"]["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["ranks_agree"] is True
    r0, r1 = dist["ranks"]
    assert (r0.pop("rank"), r1.pop("rank")) == (0, 1)
    assert r0 == r1 and r0["arch"] == summary["arch"] and r0["search_acc"] == summary["search_acc"]
    search = next(p for p in summary["phases"] if p["name"] == "search")
    # every rank draws both paths of each search step from the shared sampler and runs its own
    assert r0["paths"] == 2 * search["steps"] > 0
    assert summary["extra"]["paths_per_step"] == 2
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".hydra",
        "child.pt2",
        "child_state.pt",
        "metrics.jsonl",
        "run.log",
        "summary.json",
        "supernet.pt",
    ]
    assert not list(tmpdir.glob("nasbench-rank*"))  # rank 1's temporary Hydra folder was removed


@pytest.mark.slow
def test_torchrun_counts_every_device_and_every_image(ddp_run) -> None:
    run_dir, _ = ddp_run
    summary = json.loads((run_dir / "summary.json").read_text())
    budget = summary["budget"]
    assert summary["world_size"] == 2 and summary["num_devices"] == 2
    for p in summary["phases"]:
        assert p["num_devices"] == 2
        assert p["device_hours"] == pytest.approx(2 * p["wall_s"] / 3600)
    search = next(p for p in summary["phases"] if p["name"] == "search")
    held_out = round(budget["train_subset"] * budget["valid_fraction"])
    global_steps = (budget["train_subset"] - held_out) // budget["batch_size"]
    assert search["steps"] == global_steps  # the budget's batch is split, not doubled
    assert search["images"] == global_steps * budget["batch_size"]
    assert search["images_per_s"] == pytest.approx(search["images"] / search["wall_s"])
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(e["phase"], e["epoch"]) for e in epochs] == [("search", 1), ("finetune", 1), ("finetune", 2)]
    assert epochs[0]["images"] == search["images"]  # the epoch's figures cover both ranks' images


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["dsnas", "softmax"])
def test_two_ranks_take_the_step_of_one_process_on_the_whole_batch(tmp_path: Path, estimator: str) -> None:
    """Two ranks with half a batch each (DDP for the weights, the averaged alpha gradient) end
    one step with the weights and alpha of one process on the whole batch; half a batch alone
    does not (the control shows the comparison can fail)."""
    worker = str(ROOT / "tests" / "dist_step_worker.py")
    outs = {k: tmp_path / f"{k}.pt" for k in ("one", "half", "two")}
    for args in ((str(outs["one"]), estimator), (str(outs["half"]), estimator, "half")):
        proc = run_script(Path(worker), *args, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = torchrun(worker, str(outs["two"]), estimator)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, half, two = (torch.load(outs[k]) for k in ("one", "half", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2) and two["rows"] == [0, 1, 2, 3]
    for key in ("alpha_grad", "weights", "alpha"):
        scale = one[key].abs().max()
        assert torch.allclose(two[key], one[key], rtol=0, atol=1e-5 * scale), key
    assert (half["alpha_grad"] - one["alpha_grad"]).abs().max() > 1e-2 * one["alpha_grad"].abs().max()
    assert (half["weights"] - one["weights"]).abs().max() > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("paths", [2, 4])
def test_k_paths_on_two_ranks_take_the_step_of_one_process(tmp_path: Path, paths: int) -> None:
    """DSNAS with k independent paths per step: two ranks (each running its k/2 paths on its half
    of the batch) end the step exactly as one process running all k on the whole batch, and not
    as the single-path step (the control)."""
    worker = str(ROOT / "tests" / "dist_step_worker.py")
    outs = {k: tmp_path / f"{k}.pt" for k in ("one", "single", "two")}
    for out, flags in ((outs["one"], [f"paths={paths}"]), (outs["single"], [])):
        proc = run_script(Path(worker), str(out), "dsnas", *flags, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = torchrun(worker, str(outs["two"]), "dsnas", f"paths={paths}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, single, two = (torch.load(outs[k]) for k in ("one", "single", "two"))
    for key in ("alpha_grad", "weights", "alpha"):
        scale = one[key].abs().max()
        assert torch.allclose(two[key], one[key], rtol=0, atol=1e-5 * scale), key
    assert (single["alpha_grad"] - one["alpha_grad"]).abs().max() > 1e-2 * one["alpha_grad"].abs().max()


def test_shard_batches_split_each_global_batch(monkeypatch) -> None:
    order = torch.randperm(22, generator=torch.Generator().manual_seed(0))
    parts = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "_ENV", distributed.DistEnv(rank, 2, rank, "gloo"))
        parts.append(distributed.shard_batches(order, 8, drop_last=True))
    assert [len(p) for p in parts] == [2, 2]  # 22 images: two full batches of 8, the rest dropped
    for b in range(2):
        assert parts[0][b].tolist() + parts[1][b].tolist() == order[8 * b : 8 * b + 8].tolist()
    with pytest.raises(UserError, match="batch_size=9 does not split evenly over 2 processes"):
        distributed.shard_batches(order, 9, drop_last=True)


@pytest.mark.slow
def test_torchrun_refuses_a_sweep(tmp_path: Path) -> None:
    proc = torchrun("experiments/run.py", "-m", "scale=tiny", "device=cpu", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0
    assert "error: a torchrun job runs one configuration: launch sweeps (-m) without torchrun" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_torchrun_refuses_the_consistency_experiment(tmp_path: Path) -> None:
    proc = torchrun("experiments/consistency.py", "scale=tiny", f"hydra.run.dir={tmp_path / 'c'}")
    assert proc.returncode != 0
    assert "error: the consistency experiment runs in one process: start it without torchrun" in proc.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_torchrun_stopped_by_sigterm_resumes_to_the_uninterrupted_run(ddp_run, tmp_path: Path) -> None:
    """SIGTERM to torchrun reaches both ranks; they agree to stop at the same step, rank 0 saves,
    and the same torchrun command resumes both ranks from rank 0's checkpoint."""
    reference, _ = ddp_run
    run_dir, tmpdir = tmp_path / "run", tmp_path / "tmp"
    tmpdir.mkdir()
    args = ["method=dsnas", "method.paths_per_step=2", "space=shufflenet", "scale=tiny", "device=cpu", "progress=false"]
    args.append(f"hydra.run.dir={run_dir}")  # as ddp_run, the reference
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(
        [*TORCHRUN, "experiments/run.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    wait_for_checkpoint(proc, run_dir, "after phase 'finetune', epoch 1 of 2")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "stopped by SIGTERM" in err.decode(), err.decode()[-3000:]
    assert not (run_dir / "summary.json").exists() and (run_dir / "checkpoint.pt").exists()
    resumed = torchrun("experiments/run.py", *args, tmpdir=tmpdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = _without_timings(json.loads((run_dir / "summary.json").read_text()))
    expected = _without_timings(json.loads((reference / "summary.json").read_text()))
    assert summary["extra"]["distributed"]["ranks_agree"] is True
    assert summary == expected


@pytest.mark.slow
def test_torchrun_entrannas_with_unused_transit_ops(tmp_path: Path) -> None:
    """EnTranNAS under DistributedDataParallel: its transit cells leave ops unused every step (the
    top-2 sub-graph), which DDP must expect (``fixes_decisions``)."""
    run_dir = tmp_path / "run"
    args = ["method=entrannas", "space=darts", "scale=tiny", "device=cpu", "progress=false"]
    proc = torchrun("experiments/run.py", *args, "budget.retrain_epochs=1", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["world_size"] == 2
    assert summary["extra"]["transit_cells"] == [2]
