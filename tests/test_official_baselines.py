"""Each method as its official code runs it (docs/fidelity.md), beyond DSNAS: SPOS's evolution without
re-scoring, which weights move when a candidate did not run, ProxylessNAS's two-path weight
steps, GDAS's NAS-Bench-201 cell form."""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import ROOT, tiny_space
from methods.estimators.uniform import UniformEstimator
from methods.evolution import FlopsLimit, evolve
from methods.steps import StepOptions, weight_step
from nasbench.arch_params import ArchParameters

CPU = torch.device("cpu")
CONF = ROOT / "experiments" / "conf"


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    space = tiny_space()
    supernet = space.build_supernet()
    x = torch.rand(16, *space.inputs.shape, generator=torch.Generator().manual_seed(2))
    y = torch.randint(space.inputs.num_classes, (16,), generator=torch.Generator().manual_seed(3))
    return space, supernet, x, y


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(4)


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
    space, supernet, x, y = _setup()
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
