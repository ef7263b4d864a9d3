"""EnTranNAS (methods/entrannas.py, methods/estimators/entrannas.py) on the DARTS space: with every
cell an engine and no feature sharing it is DARTS; transit cells run only the derived sub-graph
(hooks prove the rest neither runs nor learns); DST's engine weights and derived sub-graph; the
activations held grow with the engine cells; the run's architecture is the transit sub-graph;
one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import preset, run_entry
from methods.estimators.entrannas import EnTranNASEstimator
from methods.estimators.softmax import SoftmaxEstimator
from nasbench.arch_params import ArchParameters
from nasbench.records import RunRecord
from nasbench.spaces.base import InputSpec
from nasbench.spaces.darts import DartsSpace
from nasbench.spaces.darts_genotype import EDGES_PER_CELL, NODE_ROWS

FASHION = InputSpec(1, 28, 10, (0.286,), (0.353,))
CPU = torch.device("cpu")


def space(sharing: bool = False) -> DartsSpace:
    return DartsSpace({**preset("darts", "tiny"), "feature_sharing": sharing}, FASHION)


def alpha_for(s: DartsSpace, seed: int = 0, scale: float = 1.0) -> ArchParameters:
    params = ArchParameters(s.candidate_mask())
    with torch.no_grad():
        params.alpha.copy_(scale * torch.randn(params.alpha.shape, generator=torch.Generator().manual_seed(seed)))
    return params


def bound(s: DartsSpace, derivation: str = "top2", engines: list[int] | None = None) -> EnTranNASEstimator:
    est = EnTranNASEstimator()
    est.configure(derivation, engines, 0.0)
    est.bind(s, CPU)
    return est


def test_every_cell_an_engine_without_sharing_is_darts() -> None:
    s = space()
    torch.manual_seed(0)
    supernet = s.build_supernet().eval()
    arch = alpha_for(s)
    x = torch.rand(3, 1, 28, 28)
    gen = torch.Generator()
    est = bound(s, engines=[0, 1, 2])
    assert est.transit == []
    with torch.no_grad():
        torch.testing.assert_close(
            supernet(x, est.sample(arch, gen, CPU)), supernet(x, SoftmaxEstimator().sample(arch, gen, CPU))
        )


@pytest.mark.parametrize("derivation", ["top2", "dst"])
@pytest.mark.parametrize("sharing", [False, True])
def test_transit_cells_run_and_train_only_the_derived_sub_graph(derivation: str, sharing: bool) -> None:
    s = space(sharing)
    torch.manual_seed(0)
    supernet = s.build_supernet()
    arch = alpha_for(s, seed=1, scale=3.0)
    est = bound(s, derivation)
    assert est.engines == [0, 1] and est.transit == [2]  # tiny: normal, reduction, reduction
    ran: set[tuple[int, int, int]] = set()
    for i, cell in enumerate(supernet.cells):
        for e, block in enumerate(cell.edges):
            for k, op in enumerate(block.candidates):
                inner = getattr(op, "op", op)  # a shared op's module
                inner.register_forward_hook(lambda m, a, o, key=(i, e, k): ran.add(key))
    selection = est.sample(arch, torch.Generator(), CPU)
    supernet(torch.rand(4, 1, 28, 28), selection).sum().backward()
    derived = selection.info["derived"]
    assert [sorted(ks) for ks in derived] == [sorted(ks) for ks in est.derived_ops(arch)]
    transit = supernet.cells[2]
    base = EDGES_PER_CELL  # cell 2 is a reduction cell
    for e, block in enumerate(transit.edges):
        for k, op in enumerate(block.candidates):
            keep = k in derived[base + e]
            if sharing:  # a shared op runs when any edge from its input keeps it
                sources = [src for inputs in transit.nodes for src in inputs]
                keep = any(k in derived[base + f] for f, src in enumerate(sources) if src == sources[e])
            assert ((2, e, k) in ran) == keep, (e, k)
            if not keep:
                assert all(p.grad is None for p in op.parameters())
    assert arch.alpha.grad is not None and bool(arch.alpha.grad.abs().sum() > 0)
    if derivation == "dst":
        assert est.beta.grad is not None, "the thresholds learn from the same backward"


def test_dst_engine_weights_sum_to_one_per_node_and_the_derived_arch_is_their_support() -> None:
    s = space()
    arch = alpha_for(s, seed=4, scale=3.0)
    est = bound(s, "dst")
    selection = est.sample(arch, torch.Generator(), CPU)
    q = selection.weights.detach()
    for rows in NODE_ROWS:
        assert float(q[list(rows)].sum()) == pytest.approx(1.0, abs=1e-6)
        assert bool((q[list(rows)] > 0).any())
    derived = s.validate(est.derived_arch(arch))  # the op-set form: several ops per edge allowed
    bits = torch.tensor(derived).view(2 * EDGES_PER_CELL, -1).bool()
    assert torch.equal(bits, (q > 0)[:, 1:])
    assert s.live_summary(derived)["live_ops"] == int((q > 0).sum())


def test_dst_thresholds_live_beside_alpha_whatever_the_run_device() -> None:
    """alpha stays on the CPU in every run; the thresholds must too, or a GPU run mixes devices."""
    s = space()
    est = EnTranNASEstimator()
    est.configure("dst", None, 0.0)
    est.bind(s, torch.device("meta"))  # a device no tensor of the estimator may land on
    arch = alpha_for(s)
    assert est.beta.device == arch.alpha.device and est.beta.is_leaf and est.beta.requires_grad
    selection = est.sample(arch, torch.Generator(), torch.device("meta"))
    assert selection.weights.device.type == "meta" and selection.groups[2].weights.device.type == "meta"


def saved_bytes(engines: list[int]) -> int:
    """Bytes autograd holds for the backward of one step (the activations a step keeps)."""
    s = space(True)
    torch.manual_seed(0)
    supernet = s.build_supernet()
    est = bound(s, engines=engines)
    selection = est.sample(alpha_for(s, seed=2, scale=3.0), torch.Generator(), CPU)
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        supernet(torch.rand(8, 1, 28, 28), selection).sum()
    return total


def test_the_activations_a_step_holds_grow_with_the_engine_cells() -> None:
    one, two, three = saved_bytes([0]), saved_bytes([0, 1]), saved_bytes([0, 1, 2])
    assert one < two < three


def _run(run_dir: Path, *overrides: str):
    return run_entry("run.py", "scale=tiny", "progress=false", "space=darts", f"hydra.run.dir={run_dir}", *overrides)


def test_the_run_deploys_exactly_the_transit_sub_graph(tmp_path: Path) -> None:
    proc = _run(tmp_path / "run", "method=entrannas", "budget.retrain_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = RunRecord.peek(tmp_path / "run")
    saved = record.load_supernet()
    s = space(True)
    arch = ArchParameters(s.candidate_mask())
    arch.alpha.data.copy_(saved["alpha"])
    assert s.decode(saved["arch"]) == bound(s).derived_arch(arch)
    summary = json.loads(record.summary_path.read_text())
    assert summary["extra"]["engine_cells"] == [0, 1] and summary["extra"]["transit_cells"] == [2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("space=nb201",), "error: method entrannas splits a cell search network into engine and transit cells"),
        (("space=darts", "estimator=softmax"), "error: method entrannas runs engine and transit cells"),
        (("space=darts", "method.derivation=top3"), "error: method.derivation=top3: must be one of top2, dst"),
        (("space=darts", "method.engine_cells=[7]"), "error: method.engine_cells=[7]: give at least one cell index"),
    ],
)
def test_bad_settings_give_one_line(overrides: tuple[str, ...], message: str, tmp_path: Path) -> None:
    proc = run_entry("run.py", "scale=tiny", "progress=false", f"hydra.run.dir={tmp_path / 'r'}", "method=entrannas",
                     *overrides)  # fmt: skip
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_masked_candidates_never_run_and_fixed_decisions_run_unscaled() -> None:
    """The estimator contract of tests/test_estimators.py, on the space this estimator needs."""
    s = space()
    torch.manual_seed(0)
    supernet = s.build_supernet()
    arch = alpha_for(s, seed=6, scale=2.0)
    arch.mask[0, 3] = False
    with torch.no_grad():
        arch.alpha[0, 3] = 8.0  # would dominate edge 0 if the mask were ignored
    arch.fix(1, 4)
    for derivation in ("top2", "dst"):
        est = bound(s, derivation)
        selection = est.sample(arch, torch.Generator(), CPU)
        assert 3 not in selection.active[0] and all(3 not in ks for ks in [selection.info["derived"][0]])
        assert selection.active[1] == [4] and not selection.weighted[1]
        assert selection.info["derived"][1] == [4], "transit cells keep the fixed op too"
        arch.alpha.grad = None
        supernet.zero_grad(set_to_none=True)
        supernet(torch.rand(2, 1, 28, 28), selection).sum().backward()
        assert float(arch.alpha.grad[1].abs().sum()) == 0.0, "a fixed decision learns nothing"
