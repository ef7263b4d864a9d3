"""``data=imagenet`` (any ImageFolder) through run.py end to end, with DataLoader workers, and a
stop sent to the whole process group while those workers run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, child_pids, process_running, write_image_folder
from entry_process import run_script
from test_resume import wait_for_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imagenet"), classes=3, per_class={"train": 96, "val": 20})


RUN = ROOT / "experiments" / "run.py"


def _args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "method=dsnas",
        "space=nb201",
        "scale=tiny",
        "device=cpu",
        "progress=false",
        "data=imagenet",
        f"data.root={root}",
        "data.size=32",
        "budget.workers=2",
        "budget.batch_size=16",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_run_trains_a_classifier_of_the_folders_classes(jpegs, tmp_path, decode: str) -> None:
    proc = run_script(RUN, *_args(jpegs, tmp_path / "run", f"data.decode={decode}"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["data"] == "imagenet" and summary["num_classes"] == 3
    assert summary["test_images"] == 60 and summary["input_shape"] == [3, 32, 32]
    assert summary["budget"]["workers"] == 2
    assert "has 3 class folders: the classifier gets 3 outputs" in (tmp_path / "run" / "run.log").read_text()
    child = torch.export.load(str(tmp_path / "run" / "child.pt2")).module()
    assert child(torch.rand(5, 3, 32, 32)).shape == (5, 3)  # 3 outputs, not ImageNet's 1000
    assert summary["final_acc"] > 0.5, "the red channel tells the class: well above chance (1/3)"


def test_sigterm_to_the_process_group_with_workers_stops_cleanly_and_resumes(jpegs, tmp_path) -> None:
    """What SLURM preemption and ``timeout`` do: every process of the group, loader workers
    included, gets SIGTERM. The run must save and say so in one line, then resume to the end."""
    run_dir = tmp_path / "run"
    args = _args(jpegs, run_dir, "budget.search_epochs=3")
    proc = subprocess.Popen(
        [sys.executable, str(RUN), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    wait_for_checkpoint(proc, run_dir, "after phase 'search', epoch 1")
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    time.sleep(0.3)  # inside epoch 2, its loader workers running
    workers = child_pids(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err
    # inside epoch 2, or (when the signal lands on its last step) at its end: both stop cleanly
    assert re.search(r"stopped by SIGTERM (in|after) phase 'search'", err) and "checkpoint written to" in err
    assert (run_dir / "checkpoint.pt").is_file()
    assert workers, "the loader had worker processes when the signal came"
    assert not any(process_running(pid) for pid in workers), "no worker outlives the run"
    resumed = run_script(RUN, *args, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and not (run_dir / "checkpoint.pt").exists()
    (search,) = [p for p in summary["phases"] if p["name"] == "search"]
    assert search["epochs"] == 3


def test_the_consistency_experiment_reads_an_image_folder(jpegs, tmp_path) -> None:
    out = tmp_path / "consistency"
    args = [
        "method=spos", "space=nb201", "scale=tiny", "device=cpu", "progress=false", "data=imagenet",
        f"data.root={jpegs}", "data.size=32", "data.decode=device", "budget.workers=2", "budget.batch_size=16",
        "budget.retrain_epochs=1", "n_archs=3", f"hydra.run.dir={out}",
    ]  # fmt: skip
    proc = run_script(ROOT / "experiments" / "consistency.py", *args, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (out / "consistency.csv").read_text().strip().splitlines()
    assert len(rows) >= 1 + 3  # a header and the three sampled architectures (and the method's pick)
    assert json.loads((out / "consistency.json").read_text())["data"] == "imagenet"
