"""SNAS as its official code runs it: the resource constraint's resources and gradient, alpha's
gradient clipping, the published initialisation."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import ROOT, run_entry, tiny_space
from methods.estimators.gumbel_softmax import GumbelSoftmaxEstimator
from methods.snas import log_resource_penalty, resource_penalty_grad
from methods.steps import StepOptions, estimator_step
from nasbench.arch_params import ArchParameters
from nasbench.resources import block_resources

NONE, SKIP, CONV1, CONV3, POOL = range(5)  # NAS-Bench-201's op order


def _nb201():
    space = tiny_space("nb201")
    supernet = space.build_supernet()
    return space, supernet, block_resources(supernet, torch.zeros(1, *space.inputs.shape), space.candidate_mask())


def test_each_ops_resources_follow_the_official_formulas() -> None:
    """Per block: none and skip cost nothing; a stride-1 3x3 ReLU-conv-BN has 9 C^2 parameters,
    that times H W MACs and 2 C H W + 9 C^2 memory accesses (SNAS operations.py); the 1x1 conv a
    ninth of the parameters; 3x3 average pooling 9 C H W MACs and 2 C H W accesses."""
    _, _, (table, decisions) = _nb201()
    assert len(decisions) == table.shape[0] > 6  # several cells share each edge's decision
    for row in table:
        params, macs, memory = row.T
        feature = memory[POOL] / 2  # C H W of the block's input and output
        assert params[NONE] == macs[NONE] == memory[NONE] == 0 and row[SKIP].abs().sum() == 0
        assert params[POOL] == 0 and macs[POOL] == 9 * feature
        assert params[CONV1] * 9 == params[CONV3] > 0
        channels = (params[CONV1]) ** 0.5
        assert macs[CONV3] == params[CONV3] * feature / channels
        assert memory[CONV3] == 2 * feature + params[CONV3]


def test_resource_penalty_gradient_matches_finite_differences() -> None:
    space, supernet, (table, decisions) = _nb201()
    arch = ArchParameters(space.candidate_mask(), 1.0, 0.5, torch.Generator().manual_seed(0))
    est = GumbelSoftmaxEstimator()
    est.on_epoch_start(0, 2)
    sel = est.sample(arch, torch.Generator().manual_seed(1), torch.device("cpu"))
    lam = 1e-2
    grad = resource_penalty_grad(arch, sel, table.double(), decisions, lam)

    def penalty(alpha: torch.Tensor) -> float:
        log_probs = torch.log_softmax(alpha, -1)
        z = torch.softmax((log_probs + sel.info["gumbel"].double()) / sel.info["temperature"], -1)
        return float(lam * log_resource_penalty(z, table.double(), decisions))

    alpha, eps = arch.alpha.detach().double(), 1e-6
    for i, k in [(0, 3), (2, 0), (5, 4)]:
        up, down = alpha.clone(), alpha.clone()
        up[i, k] += eps
        down[i, k] -= eps
        numeric = (penalty(up) - penalty(down)) / (2 * eps)
        assert abs(numeric - float(grad[i, k])) < 1e-6 * max(1.0, abs(float(grad[i, k])))


def test_alpha_gradient_norm_is_clipped() -> None:
    space, supernet, _ = _nb201()
    arch = ArchParameters(space.candidate_mask(), 1.0, 0.01, torch.Generator().manual_seed(0))
    est = GumbelSoftmaxEstimator()
    est.on_epoch_start(0, 2)
    moves = {}
    for clip in (None, 1e-4):
        a = ArchParameters(space.candidate_mask())
        a.load_state_dict(arch.state_dict())
        net = tiny_space("nb201").build_supernet()
        net.load_state_dict(supernet.state_dict())
        opt = torch.optim.SGD([a.alpha], lr=1.0)
        w_opt = torch.optim.SGD(net.parameters(), lr=0.0)
        options = StepOptions(alpha_grad_clip=clip)
        args = (net, est, a, torch.Generator().manual_seed(2), torch.device("cpu"), F.cross_entropy, w_opt, opt)
        step = estimator_step(*args, options=options)
        x = torch.rand(8, *space.inputs.shape, generator=torch.Generator().manual_seed(3))
        step(x, torch.arange(8) % 10)
        moves[clip] = float((a.alpha.detach() - arch.alpha.detach()).norm())
    assert moves[None] > 1e-3 and abs(moves[1e-4] - 1e-4) < 1e-7


def test_snas_config_is_the_official_one() -> None:
    cfg = OmegaConf.load(ROOT / "experiments" / "conf" / "method" / "snas.yaml")
    assert cfg.alpha_init == {"mean": 1.0, "std": 0.01} and cfg.alpha_grad_clip == 10.0
    assert cfg.resource_lambda == 0.0  # off unless asked for; the published runs: 1.5e-3


def test_resource_constraint_steers_the_search_to_cheap_cells(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_entry(
        "run.py",
        "method=snas",
        "space=nb201",
        "scale=tiny",
        "method.resource_lambda=1000",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    probs = torch.tensor(summary["extra"]["alpha_probs"])
    assert float(probs[:, [CONV1, CONV3]].sum(1).mean()) < 0.35  # 0.4 at the start
    assert not {"nor_conv_1x1", "nor_conv_3x3"} & set(summary["arch_ops"])
    refused = run_entry("run.py", "method=snas", "estimator=softmax", "method.resource_lambda=1e-3", "scale=tiny")
    assert refused.returncode != 0 and "method.resource_lambda differentiates the relaxed sample Z" in refused.stderr
