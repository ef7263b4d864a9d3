"""What every registered space promises, checked for each one: a new
space file is tested here without a line of test code."""

from __future__ import annotations

import pytest
import torch

from conftest import preset
from nasbench.flops import count_params
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec
from nasbench.supernet import Selection

FASHION = InputSpec(1, 28, 10, (0.286,), (0.353,))
#: exact equality where the child runs the very same ops; shufflenet's channel split reorders a
#: view, which leaves float rounding differences
TOLERANCE = {"nb201": 0.0}
#: architectures checked besides three sampled ones (nb201: every op, none included, mixed)
EXTRA_ARCHS = {"nb201": [(3, 0, 2, 1, 4, 0)]}


@pytest.mark.parametrize("scale", ["tiny", "cpu"])
@pytest.mark.parametrize("name", SPACES.names())
def test_child_matches_supernet_single_path(name: str, scale: str) -> None:
    """An inherited child gives the supernet's outputs on that path (eval mode), as a copy."""
    torch.manual_seed(0)
    space = SPACES.get(name)(preset(name, scale), FASHION)
    supernet = space.build_supernet()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(supernet.parameters(), lr=0.05)
    for _ in range(3):  # move weights and BatchNorm statistics away from their initial values
        loss = supernet(torch.rand(16, 1, 28, 28), Selection.single_path(space.sample(gen))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.rand(8, 1, 28, 28)
    supernet.eval()
    tol = TOLERANCE.get(name, 1e-5)
    for arch in [space.sample(gen) for _ in range(3)] + EXTRA_ARCHS.get(name, []):
        child = space.build_child(arch, supernet).eval()
        torch.testing.assert_close(child(x), supernet(x, Selection.single_path(arch)), rtol=tol, atol=tol)
        assert count_params(child) < count_params(supernet)
        # the child is a copy: training it leaves the supernet alone
        before = [p.clone() for p in supernet.parameters()]
        next(child.parameters()).data.add_(1.0)
        assert all(torch.equal(a, b) for a, b in zip(before, supernet.parameters()))


@pytest.mark.parametrize("name", SPACES.names())
def test_two_identical_steps_give_identical_gradients_as_a_run_places_the_network(name: str) -> None:
    """Reproducible runs and exact resume need bitwise-equal steps on the CPU, in the memory
    layout a run uses there (``channels_last`` unless the space's ``channels_last_on_cpu`` is
    False: darts and dsonas, whose stride-2 convolutions gave run-to-run differences)."""
    from nasbench.context import RunContext

    space = SPACES.get(name)(preset(name, "tiny"), FASHION)
    torch.manual_seed(0)
    ctx = RunContext.__new__(RunContext)
    ctx.space, ctx.device, ctx.channels_last = space, torch.device("cpu"), True
    net = ctx.place(space.build_supernet())
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, generator=gen), torch.randint(10, (64,), generator=gen)
    last = tuple(len(d.candidates) - 1 for d in space.decisions)  # dsonas: every connection kept
    for arch in [last, *(space.sample(gen) for _ in range(2))]:
        grads = []
        for _ in range(3):
            net.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x, Selection.single_path(arch)), y).backward()
            grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
        assert all(torch.equal(g, grads[0]) for g in grads), arch
