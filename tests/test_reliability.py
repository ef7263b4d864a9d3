"""Runs are reproducible and stop cleanly on a diverging loss (resume and
checkpoints: tests/test_resume.py and tests/test_checkpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import run_entry
from test_run_e2e import _tiny_run

TIMING = {"wall_s", "device_hours", "peak_mem_bytes", "peak_mem_kind", "images_per_s", "total_device_hours"}


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def test_the_same_command_gives_the_same_run(tmp_path: Path, monkeypatch) -> None:
    """Same seed, same machine: summary.json, metrics.jsonl and the supernet agree, timings aside.
    The first run is forked from the tests' pre-imported interpreter (tests/entry_process.py), the
    second starts a new one, as a user's: so this also shows the two ways give the same run."""
    runs = [tmp_path / "a", tmp_path / "b"]
    summaries = [_tiny_run(runs[0], "method=dsnas", "space=nb201", "device=cpu")]
    monkeypatch.setenv("NASBENCH_TESTS_FRESH", "1")
    summaries.append(_tiny_run(runs[1], "method=dsnas", "space=nb201", "device=cpu"))
    assert _without_timings(summaries[0]) == _without_timings(summaries[1])
    metrics = [[_without_timings(json.loads(line)) for line in (run / "metrics.jsonl").open()] for run in runs]
    assert metrics[0] == metrics[1] and len(metrics[0]) >= 3
    supernets = [torch.load(run / "supernet.pt", weights_only=True) for run in runs]
    for name, tensor in supernets[0]["state_dict"].items():
        assert torch.equal(tensor, supernets[1]["state_dict"][name]), name
    assert torch.equal(supernets[0]["alpha"], supernets[1]["alpha"])


def test_a_diverging_loss_stops_the_run_with_phase_epoch_and_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "nan"
    proc = run_entry(
        "run.py", "scale=tiny", "progress=false", "device=cpu", "budget.lr=1e12", f"hydra.run.dir={run_dir}"
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    # the loss or, first, alpha (which DSNAS samples from) becomes non-finite; either way, where
    assert lines[-1].startswith(("error: the loss became ", "error: alpha became non-finite")), lines[-1]
    assert "in phase 'search', epoch 1, " in lines[-1] and " step " in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "summary.json").exists()  # no record of a run that did not finish
