"""The README's main command, for real: DSNAS on the ShuffleNet space, Fashion-MNIST, CPU scale."""

from __future__ import annotations

import json

import pytest

from conftest import run_entry


@pytest.mark.slow
def test_default_command_deploys_a_child_above_88_percent(tmp_path) -> None:
    run_dir = tmp_path / "default"
    proc = run_entry(
        "run.py", "method=dsnas", "space=shufflenet", "progress=false", f"hydra.run.dir={run_dir}", timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["scale"] == "cpu" and summary["data"] == "fashion_mnist"
    assert summary["test_images"] == 10000
    assert summary["final_acc"] >= 0.88
    print(
        f"default run: final_acc {summary['final_acc']:.4f}, search_acc {summary['search_acc']:.4f},"
        f" wall {summary['wall_s']:.0f} s"
    )
