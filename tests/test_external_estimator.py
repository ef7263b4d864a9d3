"""A new estimator defined outside the package: one Python file plus one config file, found
through ``hydra.searchpath`` and ``estimator.module``, runs a tiny search (docs/estimators.md)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_entry, write_estimator_plugin

ESTIMATOR_FILE = '''
"""DSNAS with a moving-average baseline subtracted from each layer's credit (a variance-reduced
score-function estimator), to compare against dsnas under one budget."""

import torch

from methods.estimators.base import ESTIMATORS
from methods.estimators.dsnas import DSNASEstimator
from nasbench.supernet import one_hot_rows


@ESTIMATORS.register("dsnas_ema")
class DSNASWithBaseline(DSNASEstimator):
    name = "dsnas_ema"

    def __init__(self, decay: float = 0.9) -> None:
        super().__init__()
        self.decay, self.baseline, self.calls = decay, None, 0

    def alpha_grad(self, arch, selection):
        credit = self.credit(selection)
        if self.baseline is None:
            self.baseline = credit.clone()
        self.baseline = self.decay * self.baseline + (1 - self.decay) * credit
        self.calls += 1
        probs, sample = selection.info["probs"], selection.info["sample"]
        grad = (credit - self.baseline)[:, None] * (one_hot_rows(sample, probs.shape[1]) - probs)
        for i in arch.fixed:
            grad[i] = 0.0
        return grad

    def on_epoch_start(self, epoch, epochs):
        return {"alpha_steps_so_far": self.calls}
'''


def test_an_estimator_from_outside_the_package_runs_a_tiny_search(tmp_path: Path) -> None:
    config = "# my estimator: DSNAS credit minus an EMA baseline\nname: dsnas_ema\nmodule: dsnas_ema\ndecay: 0.8\n"
    plugin = write_estimator_plugin(tmp_path / "my_nas", "dsnas_ema", ESTIMATOR_FILE, config)
    run_dir = tmp_path / "run"
    proc = run_entry(
        "run.py",
        "method=dsnas",
        "estimator=dsnas_ema",
        f"hydra.searchpath=[file://{plugin / 'conf'}]",
        "scale=tiny",
        "progress=false",
        f"hydra.run.dir={run_dir}",
        env={"PYTHONPATH": str(plugin)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["estimator"] == "dsnas_ema" and summary["status"] == "complete"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["alpha_steps_so_far"] == 0  # the plugin's own hook ran
    probs = summary["extra"]["alpha_probs"]
    assert any(abs(p - 0.25) > 1e-4 for row in probs for p in row), "alpha moved under the plugin's gradient"


def test_an_unknown_estimator_in_the_search_path_is_still_refused(tmp_path: Path) -> None:
    proc = run_entry(
        "run.py", "estimator=nope", f"hydra.searchpath=[file://{tmp_path}]", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: unknown estimator 'nope'")
