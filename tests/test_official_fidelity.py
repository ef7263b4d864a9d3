"""Each method as its official code runs it (issue 15): DSNAS's paths per step and its FLOPs
penalty's scale, SPOS's evolution without re-scoring, which weights move when a candidate did
not run."""

from __future__ import annotations

import copy
import zlib

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import ROOT, tiny_space
from methods.dsnas import flops_penalty_grad, official_penalty_coef
from methods.estimators.dsnas import DSNASEstimator
from methods.estimators.uniform import UniformEstimator
from methods.evolution import FlopsLimit, evolve
from methods.steps import StepOptions, estimator_step, rank_paths, weight_step
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.supernet import one_hot_rows

CPU = torch.device("cpu")
CONF = ROOT / "experiments" / "conf"


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


def _score(arch) -> float:
    """A fixed, arbitrary score per architecture (no supernet needed to test the search)."""
    return zlib.crc32(repr(tuple(arch)).encode()) / 2**32


def _evolution(space, budget: int, limit_mmacs=None):
    first_calls: list = []
    cache: dict = {}

    def score(arch) -> float:
        if arch not in cache:
            first_calls.append(arch)
            cache[arch] = _score(arch)
        return cache[arch]

    cfg = {"population": 50, "parents": 10, "mutations": 25, "crossovers": 25, "mutation_prob": 0.1}
    gen = torch.Generator().manual_seed(0)
    best, log = evolve(space, score, gen, FlopsLimit(space, limit_mmacs), cfg, budget)
    return best, log, first_calls


@pytest.mark.parametrize("name", ["nb201", "shufflenet"])
def test_evolution_scores_every_slot_with_a_new_architecture(name: str) -> None:
    """As the official searcher: a visited candidate is rejected and another drawn, so 1000 slots
    score 1000 distinct architectures (the report records how many, and how many were filled at
    random after mutation and crossover gave up)."""
    space = tiny_space(name)
    best, log, scored = _evolution(space, 1000 if name == "nb201" else 200)
    assert len(scored) == len(set(scored)) == log["scored"] == log["slots"]
    assert log["rejected"]["visited"] > 0  # mutation did draw visited ones, and they were refused
    assert _score(best) == max(_score(a) for a in scored)  # the best of all, the last generation's included


def test_evolution_stops_when_the_space_is_used_up() -> None:
    """A budget larger than the space scores every architecture once and stops."""
    space = tiny_space()  # 4^4 = 256 architectures
    _, log, scored = _evolution(space, 1000)
    assert len(scored) == len(set(scored)) == space.size() == log["scored"]


def test_evolution_respects_the_flops_limit() -> None:
    space = tiny_space()
    every = FlopsLimit(space, None)
    mmacs = sorted(every.mmacs(space.sample(torch.Generator().manual_seed(s))) for s in range(64))
    cap = FlopsLimit(space, mmacs[len(mmacs) // 2])
    _, log, scored = _evolution(space, 100, mmacs[len(mmacs) // 2])
    assert scored and all(cap.allows(a) for a in scored)
    assert log["rejected"]["flops"] > 0


def _moved(policy: str) -> dict[str, bool]:
    """Two weight steps on two different paths; which candidates of the first path moved in the
    second (weight decay and momentum) when they did not run in it."""
    space, supernet, _, x, y = _setup()
    opt = torch.optim.SGD(
        [{"params": [p for p in supernet.parameters() if p.ndim > 1], "weight_decay": 0.1}], lr=0.1, momentum=0.9
    )
    arch = ArchParameters(space.candidate_mask())
    options = StepOptions(set_to_none=policy == "skip")
    step = weight_step(supernet, UniformEstimator(), arch, _gen(), CPU, F.cross_entropy, opt, options)
    blocks = supernet.choice_blocks()
    arch.fix(0, 0)
    for i in range(1, len(blocks)):
        arch.fix(i, 0)
    step(x, y)
    for i in range(len(blocks)):
        arch.fix(i, 1)
    weights = {i: next(p for p in blocks[i].candidates[0].parameters() if p.ndim > 1) for i in range(len(blocks))}
    before = {i: w.detach().clone() for i, w in weights.items()}
    step(x, y)
    return {f"block{i}": not torch.equal(before[i], weights[i].detach()) for i in weights}


def test_unsampled_candidates_decay_under_step_and_stay_under_skip() -> None:
    assert all(_moved("step").values())
    assert not any(_moved("skip").values())


@pytest.mark.parametrize(
    ("method", "policy"),
    [("dsnas", "step"), ("spos", "step"), ("gdas", "step"), ("random", "step"), ("proxyless", "skip")],
)
def test_each_method_follows_its_official_code_on_unsampled_weights(method: str, policy: str) -> None:
    assert OmegaConf.load(CONF / "method" / f"{method}.yaml")["unsampled_weights"] == policy


def test_two_path_weight_steps_draw_one_op_from_p() -> None:
    """ProxylessNAS two-path: weight steps run op k with probability p_k (official MODE None);
    alpha steps keep the pair-then-pick draw, which over-samples the likely op (the control)."""
    from methods.estimators.binary_gate import BinaryGateEstimator

    space = tiny_space()
    arch = ArchParameters(space.candidate_mask())
    p = torch.tensor([0.7, 0.2, 0.06, 0.04])
    with torch.no_grad():
        arch.alpha.copy_(p.log().expand_as(arch.alpha))
    est, gen, n = BinaryGateEstimator(mode="two_path"), torch.Generator().manual_seed(0), 4000
    weight_draws = torch.tensor([est.sample_weights_only(arch, gen, CPU).active[0][0] for _ in range(n)])
    pair_draws = torch.tensor([est.sample(arch, gen, CPU).active[0][0] for _ in range(n)])
    freq = torch.bincount(weight_draws, minlength=4).float() / n
    stderr = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 4 * stderr).all(), (freq, p)  # false alarm below 1e-4 per op
    # pair-then-pick: P(op 0) = sum over partners j of P(pair {0, j}) * p0 / (p0 + pj)
    pair_p0 = sum((p[0] * p[j] / (1 - p[0]) + p[j] * p[0] / (1 - p[j])) * p[0] / (p[0] + p[j]) for j in range(1, 4))
    assert float(pair_p0) > 0.78  # not 0.7
    pair_stderr = float((pair_p0 * (1 - pair_p0) / n).sqrt())
    assert abs(float((pair_draws == 0).float().mean()) - float(pair_p0)) <= 4 * pair_stderr


def _gdas_alpha_grad(form: str):
    """alpha's gradient from GDAS's estimator in ``form`` on the nb201 cell, and the gradient the
    official ``forward_gdas`` gives, rebuilt by hand: dL/dh[i, idx] = <dL/dm, O_idx(x)> and, for
    every other candidate k, dL/dh[i, k] = sum(dL/dm) (the value-zero h[k] added to the edge),
    summed over the cells sharing the edge, then through h = onehot + probs - sg(probs)."""
    from methods.estimators.gumbel_st import GumbelSTEstimator

    torch.manual_seed(0)
    space = tiny_space("nb201")
    supernet = space.build_supernet()
    arch = ArchParameters(space.candidate_mask(), 0.0, 0.5, torch.Generator().manual_seed(1))
    est = GumbelSTEstimator(form=form)
    est.on_epoch_start(0, 1)
    sel = est.sample(arch, torch.Generator().manual_seed(5), CPU)
    blocks: list = []
    op_outputs: list = []

    def on_block(module, inputs, output):
        output.retain_grad()
        blocks.append((module.decision, output))

    for block in supernet.choice_blocks():
        block.register_forward_hook(on_block)
        for op in block.candidates:
            op.register_forward_hook(lambda m, i, o: op_outputs.append(o))
    x = torch.rand(8, *space.inputs.shape, generator=torch.Generator().manual_seed(2))
    y = torch.randint(10, (8,), generator=torch.Generator().manual_seed(3))
    logits = supernet(x, sel)
    F.cross_entropy(logits, y).backward()
    index = sel.info["sample"]
    dl_dh = torch.zeros_like(arch.alpha)
    for (decision, out), op_out in zip(blocks, op_outputs):  # each block ran its one active op
        g = out.grad
        dl_dh[decision, index[decision]] += (g * op_out.detach()).sum()
        for k in range(arch.alpha.shape[1]):
            if k != index[decision] and bool(arch.mask[decision, k]):
                dl_dh[decision, k] += g.sum()
    alpha = arch.alpha.detach().clone().requires_grad_()
    log_probs = torch.log_softmax(alpha.masked_fill(~arch.mask, float("-inf")), -1)
    probs = torch.softmax((log_probs + sel.info["gumbel"]) / sel.info["temperature"], -1)
    (probs.masked_fill(~arch.mask, 0.0) * dl_dh).sum().backward()
    return arch.alpha.grad, alpha.grad, logits.detach()


def test_gdas_official_form_has_forward_gdas_gradient() -> None:
    got, official, logits = _gdas_alpha_grad("official")
    torch.testing.assert_close(got, official, rtol=1e-4, atol=1e-7)
    paper, official_again, paper_logits = _gdas_alpha_grad("paper")
    torch.testing.assert_close(paper_logits, logits)  # the same forward
    torch.testing.assert_close(official_again, official)
    assert (paper - official).abs().max() > 1e-3 * official.abs().max()  # the control


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
