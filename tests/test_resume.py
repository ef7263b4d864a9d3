"""Runs survive interruption, with real processes and real signals.

A run is killed (SIGKILL, no chance to save) in the middle of an epoch, or stopped by SIGTERM or
SIGINT (it saves a checkpoint at the next step and exits), then run again with the same command;
the resumed run must end exactly where an uninterrupted one does: the same architecture, the same
accuracies, the same metrics.jsonl and the same phases, timings aside.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_entry
from entry_process import run_script
from test_reliability import _without_timings

pytestmark = pytest.mark.slow

# every search and finish phase has several epochs, long enough to stop inside one: 48 steps per
# search epoch on 4,096 images, or on the DARTS space its preset's 768 (9 steps of ~0.3 s each)
COMMON = (
    "scale=tiny",
    "progress=false",
    "device=cpu",
    "budget.search_epochs=3",
    "budget.finetune_epochs=2",
    "budget.retrain_epochs=2",
)
SUBSET = "budget.train_subset=4096"
CASES = {
    "dsnas": ("method=dsnas", "space=nb201", SUBSET),
    "proxyless": ("method=proxyless", "space=nb201", SUBSET),  # bilevel: held-out stream, an alpha step every 5
    "spos": ("method=spos", "space=shufflenet", SUBSET),  # the select unit, then a retrain
    # the evaluation network's retrain: drop-path's draws and cutout's, resumed mid-retrain
    "gdas_darts": ("method=gdas", "space=darts"),
    # pretrain 1 epoch, search 2 with a prune at the start of the second: the APG momentum, the
    # pruned mask and the alternation's held-out stream resume exactly
    "dsonas": ("method=dsonas", "space=dsonas", "method.prune_every=1", "method.gamma=0.01", SUBSET),
    # DST's thresholds: an estimator's own parameters, in the estimator state and alpha's Adam;
    # they start at t = sigmoid(3) = 0.95, so the derived child keeps few ops and exports in
    # seconds (at t = 0.5 a tiny search keeps all 196, and the export alone took 26 s)
    "entrannas_dst": ("method=entrannas", "space=darts", "method.derivation=dst", "method.beta_init=3"),
}
RUN = ROOT / "experiments" / "run.py"


def _command(run_dir: Path, case: str, *extra: str) -> list[str]:
    return [sys.executable, str(RUN), *COMMON, *CASES[case], f"hydra.run.dir={run_dir}", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _run(run_dir: Path, case: str, *extra: str) -> subprocess.CompletedProcess:
    """The whole run, uninterrupted or resumed (the runs stopped by a signal start with Popen)."""
    return run_script(RUN, *COMMON, *CASES[case], f"hydra.run.dir={run_dir}", *extra, cwd=ROOT)


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, where: str, timeout: float = 300) -> None:
    """Poll ``run_dir/checkpoint.json`` until it stands ``where`` (or the process ends)."""
    deadline = time.monotonic() + timeout
    sidecar = run_dir / "checkpoint.json"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if where in json.loads(sidecar.read_text())["where"]:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)


def _stop_when(
    run_dir: Path, case: str, where: str, sig: int, delay: float, *extra: str
) -> subprocess.CompletedProcess:
    """Start the run, wait until its checkpoint stands ``where``, wait ``delay`` s, send ``sig``."""
    proc = subprocess.Popen(
        _command(run_dir, case, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    wait_for_checkpoint(proc, run_dir, where)
    assert proc.poll() is None, f"the run ended before {where!r}: {proc.stderr.read()[-2000:]}"
    time.sleep(delay)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _record(run_dir: Path) -> tuple[dict, list[dict]]:
    summary = _without_timings(json.loads((run_dir / "summary.json").read_text()))
    metrics = [_without_timings(json.loads(line)) for line in (run_dir / "metrics.jsonl").open()]
    return summary, metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per case, made on demand."""
    made: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in made:
            run_dir = tmp_path_factory.mktemp("reference") / case
            proc = _run(run_dir, case)
            assert proc.returncode == 0, proc.stderr[-3000:]
            made[case] = run_dir
        return made[case]

    return get


def _assert_same_run(resumed: Path, reference: Path) -> None:
    summary, metrics = _record(resumed)
    ref_summary, ref_metrics = _record(reference)
    assert summary["arch"] == ref_summary["arch"]
    assert summary["search_acc"] == ref_summary["search_acc"] and summary["final_acc"] == ref_summary["final_acc"]
    assert summary == ref_summary  # phases (steps, images, epochs), alpha, everything but timings
    assert metrics == ref_metrics  # no epoch lost, none repeated
    assert not (resumed / "checkpoint.pt").exists()  # a complete run keeps no checkpoint
    child, ref_child = (torch.load(d / "child_state.pt", weights_only=True)["state_dict"] for d in (resumed, reference))
    assert all(torch.equal(child[k], ref_child[k]) for k in ref_child)


@pytest.mark.parametrize(
    ("case", "where"),
    [
        ("dsnas", "after phase 'search', epoch 1 of 3"),  # inside the search
        ("dsnas", "after phase 'finetune', epoch 1 of 2"),  # after the fork: search_acc is replayed
        ("spos", "after phase 'retrain', epoch 1 of 2"),  # after the selection
        ("gdas_darts", "after phase 'retrain', epoch 1 of 2"),
        ("dsonas", "after phase 'search', epoch 1 of 2"),
        ("entrannas_dst", "after phase 'search', epoch 1 of 3"),
    ],
)
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, reference, case, where) -> None:
    run_dir = tmp_path / "run"
    killed = _stop_when(run_dir, case, where, signal.SIGKILL, delay=0.2)
    assert killed.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    assert where in json.loads((run_dir / "checkpoint.json").read_text())["where"]  # killed before the next save
    resumed = _run(run_dir, case)  # the same command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_dir} from its checkpoint ({where})" in resumed.stdout + resumed.stderr
    _assert_same_run(run_dir, reference(case))


def test_periodic_checkpoints_inside_an_epoch_resume_after_sigkill(tmp_path, reference) -> None:
    """``checkpoint.minutes``: saves inside the epoch (here after every step); a SIGKILL then
    loses at most the step in flight, and the resumed run skips the batches already trained."""
    run_dir = tmp_path / "run"
    where = "in phase 'search', epoch 2 of 3, at step 2"
    killed = _stop_when(run_dir, "dsnas", where, signal.SIGKILL, 0.0, "checkpoint.minutes=1e-9")
    assert killed.returncode == -signal.SIGKILL
    saved = json.loads((run_dir / "checkpoint.json").read_text())["where"]
    assert saved.startswith("in phase 'search', epoch 2 of 3, at step "), saved  # inside the epoch
    resumed = _run(run_dir, "dsnas", "checkpoint.minutes=0")  # the interval may change on resume
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_dir} from its checkpoint ({saved})" in resumed.stdout + resumed.stderr
    _assert_same_run(run_dir, reference("dsnas"))


def test_sigterm_saves_inside_the_epoch_and_resumes_from_that_step(tmp_path, reference) -> None:
    run_dir = tmp_path / "run"
    stopped = _stop_when(run_dir, "proxyless", "after phase 'search', epoch 1 of 3", signal.SIGTERM, delay=0.3)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM in phase 'search', epoch 2 of 3, at step "), last
    assert "checkpoint written to" in last and "run the same command again" in last
    assert "Traceback" not in stopped.stderr
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    part = saved["partial"]
    assert part["phase"] == "search" and part["epoch"] == 1 and 0 < part["step"] < 48
    assert saved["objects"]["search.step"]["count"] == 48 + part["step"]  # the bilevel step's own count
    assert {"search.model", "search.alpha", "search.optimizer", "search.alpha_opt", "search.sampler"} <= set(
        saved["objects"]
    )
    resumed = _run(run_dir, "proxyless")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(run_dir, reference("proxyless"))


def test_sigint_stops_at_the_next_step_and_the_same_command_resumes(tmp_path, reference) -> None:
    run_dir = tmp_path / "run"
    stopped = _stop_when(run_dir, "spos", "after phase 'retrain', epoch 1 of 2", signal.SIGINT, delay=0.2)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1].startswith("stopped by SIGINT in phase 'retrain', epoch 2 of 2")
    resumed = _run(run_dir, "spos", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(run_dir, reference("spos"))


def test_resume_true_finds_the_newest_interrupted_run_of_the_command(tmp_path) -> None:
    """Without hydra.run.dir every run gets a new timestamped folder; resume=true finds it."""
    args = ("scale=tiny", "progress=false", "device=cpu", "method=dsnas", "space=nb201", "budget.search_epochs=3")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    parent = tmp_path / "outputs" / "dsnas_nb201_fashion_mnist"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(parent.glob("*/checkpoint.json")):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    (folder,) = [p.parent for p in parent.glob("*/checkpoint.json")]
    other = run_entry("run.py", *args, "budget.lr=0.1", "resume=true", cwd=tmp_path)  # another configuration
    assert other.returncode == 2 and other.stderr.strip().startswith("error: resume=true: no interrupted run of")
    time.sleep(1.1)  # a new timestamp: the same command would otherwise write into the same folder
    resumed = run_entry("run.py", *args, "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (folder / "summary.json").exists() and not (folder / "checkpoint.pt").exists()
    assert [p.parent for p in parent.glob("*/summary.json")] == [folder]  # no second folder has a run


def test_a_damaged_checkpoint_is_refused_in_one_line_and_kept(tmp_path) -> None:
    run_dir = tmp_path / "run"
    killed = _stop_when(run_dir, "dsnas", "after phase 'search', epoch 1 of 3", signal.SIGKILL, delay=0.0)
    assert killed.returncode == -signal.SIGKILL
    checkpoint = run_dir / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk or a broken copy
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    proc = _run(run_dir, "dsnas")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {checkpoint} is damaged (RuntimeError) and cannot be resumed; pass overwrite=true to start"
        " this run again from the beginning"
    )
    assert checkpoint.read_bytes() == data[: len(data) // 2]  # nothing touched
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    other = _run(run_dir, "dsnas", "seed=1")
    assert other.returncode == 2


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path) -> None:
    run_dir = tmp_path / "run"
    _stop_when(run_dir, "dsnas", "after phase 'search', epoch 1 of 3", signal.SIGKILL, delay=0.0)
    proc = _run(run_dir, "dsnas", "seed=3")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    checkpoint = run_dir / "checkpoint.pt"
    assert line.startswith(f"error: {checkpoint} was made by another configuration (seed: 0 there, 3 here)")
    fresh = _run(run_dir, "dsnas", "seed=3", "overwrite=true")  # the explicit way to start again
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["seed"] == 3


def test_a_diverging_run_keeps_its_last_good_checkpoint(tmp_path) -> None:
    """The weights train one good warm-up epoch; then alpha's lr (infinite) makes alpha diverge."""
    run_dir = tmp_path / "run"
    proc = _run(run_dir, "dsnas", "method.alpha_warmup_epochs=1", "budget.arch_lr_multiplier=1e309")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: alpha became non-finite") and "in phase 'search', epoch 1, at step 1" in line
    assert not (run_dir / "summary.json").exists()
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert saved["done"] == ["warmup/1"] and "after phase 'warmup', epoch 1 of 1" in saved["where"]
    assert torch.isfinite(saved["objects"]["search.alpha"]["alpha"]).all()
    assert all(torch.isfinite(t).all() for t in saved["objects"]["warmup.model"].values() if t.is_floating_point())
