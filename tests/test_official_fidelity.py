"""Each method as its official code runs it (docs/fidelity.md): DSNAS's paths per step and its FLOPs
penalty's scale, SPOS's evolution without re-scoring, which weights move when a candidate did
not run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_space
from methods.dsnas import flops_penalty_grad, official_penalty_coef
from methods.estimators.dsnas import DSNASEstimator
from methods.steps import StepOptions, estimator_step, rank_paths
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.supernet import one_hot_rows

CPU = torch.device("cpu")


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    space = tiny_space()
    supernet = space.build_supernet()  # train mode: every sub-batch has its own BatchNorm statistics
    arch = ArchParameters(space.candidate_mask(), 0.0, 0.7, torch.Generator().manual_seed(1))
    x = torch.rand(16, *space.inputs.shape, generator=torch.Generator().manual_seed(2))
    y = torch.randint(space.inputs.num_classes, (16,), generator=torch.Generator().manual_seed(3))
    return space, supernet, arch, x, y


def _dsnas_step(supernet, arch, x, y, sampler, paths: int, penalty=None):
    """One DSNAS step with plain SGD at lr 1 (no momentum, no decay): each parameter moves by
    minus its gradient, so the moves are the gradients."""
    weight_opt = torch.optim.SGD(supernet.parameters(), lr=1.0)
    alpha_opt = torch.optim.SGD([arch.alpha], lr=1.0)
    est = DSNASEstimator()
    step = estimator_step(
        supernet, est, arch, sampler, CPU, F.cross_entropy, weight_opt, alpha_opt, penalty, StepOptions(paths=paths)
    )
    w0, a0 = [p.detach().clone() for p in supernet.parameters()], arch.alpha.detach().clone()
    step(x, y)
    moves = [w0_ - p.detach() for w0_, p in zip(w0, supernet.parameters())]
    return moves, a0 - arch.alpha.detach()


@pytest.mark.parametrize("paths", [2, 4])
def test_k_paths_per_step_equal_the_mean_of_k_single_path_steps(paths: int) -> None:
    """The weights' and alpha's gradients of one k-path step are the mean of k single-path steps,
    step j on the j-th sub-batch with the j-th path the sampler draws."""
    _, supernet, arch, x, y = _setup()
    moves, alpha_move = _dsnas_step(copy.deepcopy(supernet), copy.deepcopy(arch), x, y, _gen(), paths)
    singles = []
    for j, (xj, yj) in enumerate(zip(x.tensor_split(paths), y.tensor_split(paths))):
        sampler, a = _gen(), copy.deepcopy(arch)
        for _ in range(j):  # the j-th draw of the shared stream
            DSNASEstimator().sample(a, sampler, CPU)
        singles.append(_dsnas_step(copy.deepcopy(supernet), a, xj, yj, sampler, 1))
    mean_alpha = torch.stack([s[1] for s in singles]).mean(0)
    torch.testing.assert_close(alpha_move, mean_alpha, rtol=1e-4, atol=1e-6)
    for i, move in enumerate(moves):
        torch.testing.assert_close(move, torch.stack([s[0][i] for s in singles]).mean(0), rtol=1e-4, atol=1e-6)
    # the control: the first path alone on the whole batch is a different step
    _, first_only = _dsnas_step(copy.deepcopy(supernet), copy.deepcopy(arch), x, y, _gen(), 1)
    assert (first_only - alpha_move).abs().max() > 1e-3 * alpha_move.abs().max()


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(4)


def test_paths_are_shared_out_over_ranks(monkeypatch) -> None:
    from nasbench import distributed

    def at(rank: int, world: int, count: int) -> list[int]:
        monkeypatch.setattr(distributed, "_ENV", distributed.DistEnv(rank, world, rank, "gloo"))
        return list(rank_paths(count))

    assert [at(r, 2, 8) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [at(r, 8, 8) for r in range(8)] == [[r] for r in range(8)]  # the official 8 GPUs
    assert [at(r, 4, 2) for r in range(4)] == [[0], [0], [1], [1]]
    assert [at(r, 2, 1) for r in range(2)] == [[0], [0]]
    with pytest.raises(UserError, match="paths_per_step=3 with 2 processes"):
        at(0, 2, 3)


def _official_alpha_grad(supernet, arch, x, y, sampler, world: int, eta: float, mflops) -> torch.Tensor:
    """What SNAS-Series/DSNAS network.py + train_imagenet.py leave in log_alpha.grad on 8 GPUs,
    replayed rank by rank: each rank's error_loss is its CE / world; the credit of that loss
    multiplies d(sum log p(Z))/d alpha, itself divided by world; ``flops_loss_coef * flops_loss``
    is backpropagated as is; ``average_gradients`` sums over the ranks."""
    total = torch.zeros_like(arch.alpha)
    est = DSNASEstimator()
    for xr, yr in zip(x.tensor_split(world), y.tensor_split(world)):
        sel = est.sample(arch, sampler, CPU)
        sample, probs = sel.info["sample"], sel.info["probs"]
        (F.cross_entropy(supernet(xr, sel), yr) / world).backward()
        credit = sel.weights.grad.gather(1, sample[:, None]).squeeze(1)  # block_reward
        task = credit[:, None] * (one_hot_rows(sample, probs.shape[1]) - probs) / world
        alpha = arch.alpha.detach().clone().requires_grad_()
        p = torch.softmax(alpha, -1)
        rows = torch.arange(len(sample))
        (eta * (p[rows, sample] * mflops[rows, sample]).sum()).backward()
        total += task + alpha.grad
    return total


def test_penalty_to_task_ratio_is_the_official_runs() -> None:
    """With coef = official_penalty_coef(eta, W), the suite's alpha gradient with W paths per step
    is the official W-GPU gradient times W (a scale Adam ignores): the penalty weighs against the
    task exactly as in the published run. With coef = eta (the flag's number) it does not."""
    space, supernet, arch, x, y = _setup()
    world, eta = 4, 1e-2
    mflops = space.candidate_macs() / 1e6
    official = _official_alpha_grad(copy.deepcopy(supernet), arch, x, y, _gen(), world, eta, mflops)

    def suite(coef: float) -> torch.Tensor:
        a = copy.deepcopy(arch)

        def penalty(sel):
            return flops_penalty_grad(a, sel.info["sample"], mflops, coef, 0.0)

        return _dsnas_step(copy.deepcopy(supernet), a, x, y, _gen(), world, penalty)[1]

    assert official_penalty_coef(eta, world) == pytest.approx(eta * 16)
    torch.testing.assert_close(suite(official_penalty_coef(eta, world)), world * official, rtol=1e-4, atol=1e-7)
    naive = suite(eta)
    assert (naive - world * official).abs().max() > 1e-2 * official.abs().max()
    assert official_penalty_coef() == pytest.approx(6.4e-5)  # the published run: 1e-6 on 8 GPUs


def test_published_dsnas_path_sits_under_the_penalty_threshold() -> None:
    """The published architecture's choice blocks stay under the 290 MFLOPs threshold (its
    penalty is zero, as in the official run), while the heaviest path is above it."""
    from test_shufflenet_space import DSNAS_ARCH, IMAGENET

    from conftest import preset
    from nasbench.spaces import SPACES

    space = SPACES.get("shufflenet")(preset("shufflenet", "paper"), IMAGENET)
    mflops = space.candidate_macs() / 1e6
    arch = ArchParameters(space.candidate_mask())
    coef, threshold = official_penalty_coef(), 290.0
    published = torch.tensor(DSNAS_ARCH)
    assert float(mflops[torch.arange(20), published].sum()) < threshold
    assert flops_penalty_grad(arch, published, mflops, coef, threshold) is None
    heaviest = mflops.argmax(1)
    assert float(mflops[torch.arange(20), heaviest].sum()) >= threshold
    assert flops_penalty_grad(arch, heaviest, mflops, coef, threshold) is not None


def test_bad_official_options_are_one_line(tmp_path) -> None:
    from conftest import run_entry

    cases = [
        (["method.paths_per_step=0"], "error: method.paths_per_step=0: must be auto or a whole number of at least 1"),
        (
            ["method.paths_per_step=2", "estimator=binary_gate"],
            "error: method.paths_per_step=2: estimator binary_gate adjusts alpha after each step for its one sampled"
            " path; use method.paths_per_step=1 with it",
        ),
        (
            ["method=spos", "method.unsampled_weights=maybe"],
            "error: method.unsampled_weights=maybe: must be one of step, skip",
        ),
    ]
    for i, (args, message) in enumerate(cases):
        run_dir = tmp_path / str(i)
        proc = run_entry("run.py", "scale=tiny", "progress=false", *args, f"hydra.run.dir={run_dir}")
        assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [message], proc.stderr[-2000:]
        assert not run_dir.exists()  # refused before it wrote anything of its own
