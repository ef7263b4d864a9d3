"""experiments/gpu_check.py, the script a GPU user runs first: here on the CPU (``--device cpu``),
a few of its checks, its table and CSV, and a failing check that makes it exit 1."""

from __future__ import annotations

import csv
import subprocess

import pytest
import torch

from conftest import ROOT
from entry_process import run_script


def _check(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return run_script(ROOT / "experiments" / "gpu_check.py", f"--out={tmp_path}", *args, timeout=600, cwd=tmp_path)


def test_the_gpu_check_runs_its_checks_and_prints_one_table(tmp_path) -> None:
    proc = _check(tmp_path, "--device=cpu", "--only=tiny", "--methods=dsnas", "--spaces=nb201", "--precisions=bf16")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = list(csv.DictReader((tmp_path / "gpu_check.csv").open()))
    assert [r["check"] for r in rows] == ["tiny/dsnas/nb201/bf16"]
    assert rows[0]["status"] == "ok" and float(rows[0]["seconds"]) > 0
    assert "bf16" in rows[0]["note"] and "final_acc" in rows[0]["note"]
    assert proc.stdout.strip().splitlines()[-1] == "1 passed, 0 failed"
    assert (tmp_path / "runs" / "tiny_dsnas_nb201_bf16" / "summary.json").is_file()
    assert (tmp_path / "logs" / "tiny_dsnas_nb201_bf16.log").read_text().startswith("$ ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure path on a host without CUDA")
def test_a_failing_check_is_a_row_with_its_error_and_exit_status_1(tmp_path) -> None:
    proc = _check(
        tmp_path, "--device=cuda", "--only=tiny", "--methods=spos", "--spaces=shufflenet", "--precisions=fp32"
    )
    assert proc.returncode == 1
    (row,) = csv.DictReader((tmp_path / "gpu_check.csv").open())
    assert row["status"] == "FAILED"
    assert row["note"].startswith("error: device=cuda asked for, but this machine has no CUDA GPU")
    assert proc.stdout.strip().splitlines()[-1] == "0 passed, 1 failed: tiny/spos/shufflenet/fp32"


def test_an_unknown_group_is_one_line(tmp_path) -> None:
    proc = _check(tmp_path, "--only=tiny,gpus")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "error: unknown check group(s) gpus; choose from: tiny, main, bench, cells, lab, imagefolder, torchrun"
    )
