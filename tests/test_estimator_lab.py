"""The estimator lab (experiments/estimator_lab.py): its exact gradient, its statistics, and the
command a user runs, with an estimator from outside the package."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import ROOT, run_entry, write_estimator_plugin

sys.path.insert(0, str(ROOT / "experiments"))

from lab_exact import LabProblem, enumerate_losses, exact_gradient, fix_all_but  # noqa: E402
from lab_stats import compare, draw, error_curve  # noqa: E402
from methods.estimators.base import build_estimator  # noqa: E402
from nasbench.arch_params import ArchParameters  # noqa: E402
from nasbench.supernet import Supernet  # noqa: E402

DECISIONS, CANDIDATES, WIDTH, CLASSES = 3, 3, 6, 4


class ParallelLayers(Supernet):
    """Choice layers that all read the input; their outputs add up, then a linear head.

    ``tanh``: False makes the logits, and a loss linear in them, linear in every layer's output
    scale, so that L(Z) = sum_i c_i(Z_i) exactly; True puts a nonlinearity between."""

    def __init__(self, tanh: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(
            self.make_choice_block(i, [nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(CANDIDATES)])
            for i in range(DECISIONS)
        )
        self.head = nn.Linear(WIDTH, CLASSES, bias=False)
        self.tanh = tanh

    def body(self, x: torch.Tensor) -> torch.Tensor:
        out = sum(layer(x) for layer in self.layers)
        return self.head(torch.tanh(out) if self.tanh else out)


def linear_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear in the logits: minus the mean logit of the true class."""
    return -logits.gather(1, y[:, None]).mean()


def toy_problem(tanh: bool, loss=nn.functional.cross_entropy, alpha_seed: int = 1) -> LabProblem:
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(32, WIDTH, generator=gen), torch.randint(CLASSES, (32,), generator=gen)
    arch = ArchParameters(torch.ones(DECISIONS, CANDIDATES, dtype=torch.bool))
    with torch.no_grad():
        arch.alpha.copy_(torch.randn(DECISIONS, CANDIDATES, generator=torch.Generator().manual_seed(alpha_seed)))
    return LabProblem(ParallelLayers(tanh), arch, x, y, loss, torch.device("cpu"), list(range(DECISIONS)))


def brute_force_objective(problem: LabProblem, alpha: torch.Tensor) -> float:
    """E_Z[L(Z)] by its definition, with none of lab_exact's code: a loop over every path."""
    probs = torch.softmax(alpha.double(), dim=-1)
    total = 0.0
    for path in itertools.product(range(CANDIDATES), repeat=DECISIONS):
        weight = math.prod(float(probs[i, k]) for i, k in enumerate(path))
        total += weight * problem.path_loss(path)
    return total


def test_the_exact_gradient_matches_finite_differences_of_the_expected_loss() -> None:
    problem = toy_problem(tanh=True)
    ops, losses = enumerate_losses(problem, max_paths=100)
    assert len(losses) == CANDIDATES**DECISIONS and float(losses.std()) > 1e-3  # the paths really differ
    alpha = problem.arch.alpha.detach().double()
    exact = exact_gradient(alpha, problem.arch.mask, problem.free, ops, losses)
    eps = 1e-5
    numeric = torch.zeros_like(exact)
    for i, k in itertools.product(range(DECISIONS), range(CANDIDATES)):
        up, down = alpha.clone(), alpha.clone()
        up[i, k] += eps
        down[i, k] -= eps
        numeric[i, k] = (brute_force_objective(problem, up) - brute_force_objective(problem, down)) / (2 * eps)
    assert torch.allclose(exact, numeric, rtol=1e-4, atol=1e-7), (exact, numeric)
    assert float(exact.abs().max()) > 1e-3


def test_reinforce_is_unbiased_within_its_standard_error() -> None:
    """A statistical test: per entry, |mean - exact| < z * standard error, z for a 1% false-alarm
    rate over all 9 entries together (Bonferroni, two-sided: z = 3.26). Seeded, so it does not
    flake; a biased estimator (softmax below) fails the same test."""
    problem = toy_problem(tanh=True)
    ops, losses = enumerate_losses(problem, max_paths=100)
    keep = problem.entries()
    exact = exact_gradient(problem.arch.alpha, problem.arch.mask, problem.free, ops, losses)[keep]
    z = statistics.NormalDist().inv_cdf(1 - 0.01 / (2 * exact.numel()))
    assert 3.2 < z < 3.3

    def within(grads: torch.Tensor) -> bool:
        se = grads.std(0, unbiased=True) / math.sqrt(grads.shape[0])
        return bool(((grads.mean(0) - exact).abs() <= z * se + 1e-12).all())

    reinforce = draw(build_estimator({"name": "reinforce"}), problem, 4000, seed=3).grads
    assert within(reinforce)
    assert compare(reinforce, exact, bootstrap=0)["rel_std"] > 0.5  # noisy: the test has something to average
    softmax = draw(build_estimator({"name": "softmax"}), problem, 2, seed=3).grads
    assert not within(softmax + 1e-9 * torch.randn(softmax.shape))  # the mixture's gradient is not E_Z's


def test_dsnas_is_unbiased_when_the_loss_is_linear_in_the_layer_scales() -> None:
    """With L(Z) = sum_i c_i(Z_i), DSNAS's first-order credit is each layer's exact contribution,
    so its mean is the exact gradient; with a nonlinearity between, it is not."""
    problem = toy_problem(tanh=False, loss=linear_loss)
    ops, losses = enumerate_losses(problem, max_paths=100)
    keep = problem.entries()
    exact = exact_gradient(problem.arch.alpha, problem.arch.mask, problem.free, ops, losses)[keep]
    grads = draw(build_estimator({"name": "dsnas"}), problem, 3000, seed=4).grads
    stats = compare(grads, exact, bootstrap=100)
    assert stats["cos"] > 0.995 and stats["rel_err"] < 4 * stats["rel_std"] / math.sqrt(3000)
    # every sample's credit is exact: the per-entry expectation is matched to its standard error
    se = grads.std(0) / math.sqrt(grads.shape[0])
    assert bool(((grads.mean(0) - exact).abs() <= 4 * se + 1e-9).all())

    curved = toy_problem(tanh=True, loss=linear_loss)
    ops, losses = enumerate_losses(curved, max_paths=100)
    exact = exact_gradient(curved.arch.alpha, curved.arch.mask, curved.free, ops, losses)[keep]
    biased = compare(draw(build_estimator({"name": "dsnas"}), curved, 3000, seed=4).grads, exact, bootstrap=100)
    assert biased["rel_bias"] > 5 * biased["rel_bias_se"] > 0


def test_fixed_decisions_leave_the_enumeration_and_the_comparison() -> None:
    problem = toy_problem(tanh=True)
    fix_all_but(problem.arch, [1], reference=(2, 0, 1))
    problem.free = [1]
    ops, losses = enumerate_losses(problem, max_paths=3)
    assert problem.paths() == [(2, 0, 1), (2, 1, 1), (2, 2, 1)] and len(losses) == 3
    assert problem.entries().sum() == CANDIDATES
    grads = draw(build_estimator({"name": "reinforce"}), problem, 5, seed=0).grads
    assert grads.shape == (5, CANDIDATES)


def test_the_error_curve_falls_as_one_over_root_n_for_unbiased_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    reference = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    grads = reference + torch.randn(4096, 3, generator=gen, dtype=torch.float64)
    curve = {row["n"]: row["rel_err"] for row in error_curve(grads, reference)}
    assert curve[1] / curve[64] == pytest.approx(8.0, rel=0.15)
    biased = error_curve(grads + 0.5, reference)
    assert biased[-1]["rel_err"] == pytest.approx(0.5 * math.sqrt(3) / float(reference.norm()), rel=0.05)


PLUGIN = '''
"""REINFORCE that subtracts the mean loss over all paths of a second sample: a made-up
estimator, to show the lab running a method of one's own."""

from methods.estimators.base import ESTIMATORS
from methods.estimators.reinforce import ReinforceEstimator


@ESTIMATORS.register("reinforce_fast")
class FastBaseline(ReinforceEstimator):
    name = "reinforce_fast"
'''


@pytest.mark.slow
def test_the_lab_command_measures_an_outside_estimator_and_the_report_shows_it(tmp_path: Path) -> None:
    config = "name: reinforce_fast\nmodule: reinforce_fast\nbaseline_decay: 0.5\n"
    plugin = write_estimator_plugin(tmp_path / "my_nas", "reinforce_fast", PLUGIN, config)
    out = tmp_path / "lab"
    proc = run_entry(
        "estimator_lab.py",
        "space=nb201",
        "estimators=[dsnas,reinforce_fast,gumbel_st]",
        f"hydra.searchpath=[file://{plugin / 'conf'}]",
        "free=2",
        "samples=16",
        "warmup_steps=3",
        "batch_size=16",
        "bootstrap=20",
        "threads=1",
        f"hydra.run.dir={out}",
        env={"PYTHONPATH": str(plugin)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "lab.json").read_text())
    assert meta["paths"] == 25 and meta["free_decisions"] == [4, 5]
    table = pd.read_csv(out / "lab.csv")
    assert set(table["estimator"]) == {"dsnas", "reinforce_fast", "gumbel_st@tau=10", "gumbel_st@tau=0.1"}
    assert set(table["point"]) == {"uniform", "peaked"}
    assert table[["cos", "rel_err", "rel_std", "cost_vs_path"]].notna().all().all()
    gdas = table[table["estimator"].str.startswith("gumbel_st")]
    assert gdas[["relaxed_cos", "relaxation_cos"]].notna().all().all()  # measured against its relaxation too
    assert (table.loc[table["estimator"] == "dsnas", "ops_run"] == 1).all()
    assert (out / "figures" / "lab_bias_variance.png").stat().st_size > 1000
    report = run_entry("../analysis/report.py", str(out), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Estimator lab" in text and "reinforce_fast" in text and "lab_bias_variance" in text


def test_the_lab_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    proc = run_entry("estimator_lab.py", "estimators=[scales]", f"hydra.run.dir={tmp_path / 'a'}")
    assert proc.returncode == 2 and proc.stderr.startswith("error: estimator scales: alpha is no distribution")
    assert "Traceback" not in proc.stderr
    proc = run_entry("estimator_lab.py", "points=[run]", f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode == 2 and "alpha_from" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no half folder left for a report
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    proc = run_entry("estimator_lab.py", "points=[run]", f"hydra.run.dir={tmp_path / 'mine'}")
    assert proc.returncode == 2 and (tmp_path / "mine" / "notes.txt").exists()  # a folder that existed stays


def test_only_a_deterministic_estimator_is_sampled_fewer_times() -> None:
    """A stochastic estimator at a peaked alpha draws the same path again and again; it is still
    sampled N times (three equal samples in a row are no proof of determinism), softmax is not."""
    problem = toy_problem(tanh=True)
    with torch.no_grad():
        problem.arch.alpha.copy_(20.0 * torch.eye(DECISIONS, CANDIDATES))
    peaked = draw(build_estimator({"name": "dsnas"}), problem, 12, seed=0)
    assert len(peaked.seconds) == 12 and peaked.grads.shape[0] == 12
    mixture = draw(build_estimator({"name": "softmax"}), problem, 12, seed=0)
    assert len(mixture.seconds) == 3 and mixture.grads.shape[0] == 12
