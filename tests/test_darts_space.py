"""The DARTS cell space against the DARTS code (quark0/darts): parameter counts of the search
network and of the published genotypes' evaluation networks, op order, reductions, derivation,
genotype forms, variable fan-in, and DSNAS's credit on every op kind."""

from __future__ import annotations

import pytest
import torch

from conftest import preset
from nasbench.errors import UserError
from nasbench.flops import count_params
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec
from nasbench.spaces.darts_genotype import (
    EDGES,
    EDGES_PER_CELL,
    PUBLISHED_TEXT,
    arch_to_genotype,
    format_genotype,
    genotype_to_arch,
    parse_genotype,
    published,
)
from nasbench.spaces.darts_networks import Cell, reduction_cells
from nasbench.spaces.darts_ops import OPS, Identity, drop_path
from nasbench.supernet import Selection, one_hot_rows

CIFAR = InputSpec(3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
FASHION = InputSpec(1, 28, 10, (0.286,), (0.353,))


def paper_space(**changes):
    return SPACES.get("darts")({**preset("darts", "paper"), **changes}, CIFAR)


def expected_params(genotype, layers: int, c: int, classes: int = 10, search: bool = False) -> int:
    """The DARTS code's count (``count_parameters_in_MB`` x 1e6: every parameter, auxiliary head
    excluded), by formula: stem 3x3 conv to 3C + BN; per cell the two preprocessings and each
    kept op; the classifier. ``search``: the search network (every op on every edge, BatchNorm in
    the cells without parameters)."""
    bn = 0 if search else 2

    def op(name: str, ch: int, stride: int) -> int:
        if name.startswith("sep_conv_"):
            k = int(name[-1])
            return 2 * (ch * k * k + ch * ch + bn * ch)
        if name.startswith("dil_conv_"):
            k = int(name[-1])
            return ch * k * k + ch * ch + bn * ch
        if name == "skip_connect" and stride == 2:
            return ch * ch + bn * ch  # FactorizedReduce: two 1x1 convs to C/2
        return 0

    total = 3 * 3 * c * 9 + 2 * 3 * c
    c_pp, c_p, cur = 3 * c, 3 * c, c
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        cur = cur * 2 if reduction else cur
        total += c_pp * cur + bn * cur  # FactorizedReduce (two 1x1 convs to C/2) or a 1x1 conv
        total += c_p * cur + bn * cur
        if search:
            pairs = [(name, src) for node in range(2, 6) for src in range(node) for name in OPS]
        else:
            nodes = genotype.reduce if reduction else genotype.normal
            pairs = [(name, src) for node in nodes for name, src in node]
        total += sum(op(name, cur, 2 if reduction and src < 2 else 1) for name, src in pairs)
        c_pp, c_p = c_p, 4 * cur
    return total + c_p * classes + classes


def test_search_network_has_the_darts_codes_parameter_count() -> None:
    """8 cells, C=16, all 8 ops on 14 edges, alpha excluded, BatchNorm without parameters in the
    cells: 1,930,618, the 'param size = 1.930618MB' DARTS's train_search.py logs."""
    net = paper_space().build_supernet()
    assert count_params(net) == expected_params(None, 8, 16, search=True) == 1_930_618


#: published parameter counts (millions, rounded by their papers); DARTS_V1's and SNAS_mild's code
#: genotypes do not give their papers' 3.3M and 2.9M (methods.md, "DARTS cell space")
PUBLISHED_M = {
    "DARTS_V1": (3.17, 3.3),
    "DARTS_V2": (3.3, 3.3),
    "PC_DARTS_cifar": (3.6, 3.6),
    "PDARTS": (3.4, 3.4),
    "GDAS_V1": (3.4, 3.4),
    "SNAS_mild": (2.66, 2.9),
    "SNAS_moderate": (2.8, 2.8),
    "SNAS_aggressive": (2.3, 2.3),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_TEXT))
def test_evaluation_networks_have_the_published_parameter_counts(name: str) -> None:
    space = paper_space()
    g = published(name)
    net = space.build_eval_network(g)
    counted = sum(p.numel() for key, p in net.named_parameters() if "auxiliary" not in key)
    assert counted == expected_params(g, 20, 36)
    ours, paper = PUBLISHED_M[name]
    assert round(counted / 1e6, len(str(ours).split(".")[1])) == ours
    if name == "DARTS_V2":  # the DARTS code's own log for its evaluation network
        assert counted == 3_349_342
    assert (round(counted / 1e6, 1) == paper) == (name not in ("DARTS_V1", "SNAS_mild"))
    # the deployed network drops the auxiliary head, which DARTS's count excludes
    assert net.auxiliary_head is not None
    assert count_params(space.deployable(net)) == counted


def test_imagenet_mobile_network_has_the_published_parameter_count() -> None:
    """DARTS_V2 in the mobile setting (NetworkImageNet, 14 cells, C=48, 224x224, 1000 classes):
    4.7M in the DARTS paper; 4,718,752 counted here (docs/spaces.md)."""
    imagenet = InputSpec(3, 224, 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    space = SPACES.get("darts")({**preset("darts", "paper"), "resolution": 224}, imagenet)
    assert space.imagenet
    net = space.deployable(space.build_eval_network(published("DARTS_V2")))
    assert count_params(net) == 4_718_752
    assert net.eval()(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_op_order_reductions_and_shared_alpha() -> None:
    assert OPS == (
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
    )
    space = paper_space()
    assert space.num_decisions == 28 and space.max_candidates == 8
    net = space.build_supernet()
    assert [c.reduction for c in net.cells] == [i in (2, 5) for i in range(8)] and reduction_cells(8) == (2, 5)
    for cell in net.cells:
        # one alpha row per edge and cell type, shared by every cell of that type
        assert [b.decision for b in cell.edges] == [(14 if cell.reduction else 0) + e for e in range(14)]
        for e, (_, src) in enumerate(EDGES):
            sep = cell.edges[e].candidates[OPS.index("sep_conv_3x3")]
            assert sep[1].stride == ((2, 2) if cell.reduction and src < 2 else (1, 1))
            pool = cell.edges[e].candidates[OPS.index("max_pool_3x3")]
            assert isinstance(pool[1], torch.nn.BatchNorm2d) and not pool[1].affine  # search only
    x = torch.rand(2, 3, 32, 32)
    shapes = []
    net.cells[0].register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    net.cells[2].register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    net.cells[5].register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    net(x, Selection.single_path(space.sample(torch.Generator().manual_seed(0))))
    assert shapes == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8)]  # 4C, doubled at each reduction


def darts_rule(p: torch.Tensor) -> list[tuple[str, int]]:
    """DARTS's ``genotype()._parse`` for one cell, written out: per node, the inputs sorted by
    their largest non-none weight, the first two kept with their best non-none op."""
    gene, start = [], 0
    for i in range(4):
        rows = p[start : start + i + 2]
        order = sorted(range(i + 2), key=lambda j: -max(float(rows[j][k]) for k in range(1, 8)))
        for j in order[:2]:
            best = max(range(1, 8), key=lambda k: float(rows[j][k]))
            gene.append((OPS[best], j))
        start += i + 2
    return gene


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top2_derivation_is_the_darts_rule(seed: int) -> None:
    space = paper_space()
    gen = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(28, 8, generator=gen), -1)
    p[:, 0] += 0.5  # none often the largest: it must never be picked
    g = space.genotype(space.derive(p))
    for cell, rows in ((g.normal, p[:14]), (g.reduce, p[14:])):
        assert sorted(pair for node in cell for pair in node) == sorted(darts_rule(rows))
        assert all(len(node) == 2 for node in cell)
    argmax = SPACES.get("darts")({**preset("darts", "paper"), "derivation": "argmax"}, CIFAR)
    assert argmax.derive(p) == tuple(int(k) for k in p.argmax(-1))


def test_genotype_forms_round_trip() -> None:
    for name, text in PUBLISHED_TEXT.items():
        g = parse_genotype(text)
        arch = genotype_to_arch(g)
        again = parse_genotype(format_genotype(arch_to_genotype(arch)))
        assert genotype_to_arch(again) == arch, name
    # the DARTS code's printed form reads back to itself
    v2 = published("DARTS_V2")
    assert format_genotype(v2) == PUBLISHED_TEXT["DARTS_V2"]
    # SNAS's edge_all form (all 14 edges, 'none' where absent) is the same cell as its 2-per-node form
    edge_all = (
        "Genotype(normal=[('dil_conv_5x5', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), ('skip_connect', 1),"
        " ('none', 2), ('skip_connect', 0), ('none', 3), ('none', 2), ('skip_connect', 1), ('sep_conv_3x3', 0),"
        " ('dil_conv_5x5', 1), ('none', 4), ('none', 3), ('none', 2)], normal_concat=range(2, 6),"
        " reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_5x5', 0), ('none', 2), ('dil_conv_5x5', 1),"
        " ('none', 3), ('none', 2), ('sep_conv_5x5', 0), ('sep_conv_5x5', 1), ('none', 4), ('none', 3), ('none', 2),"
        " ('sep_conv_5x5', 0), ('sep_conv_5x5', 1)], reduce_concat=range(2, 6))"
    )
    assert genotype_to_arch(parse_genotype(edge_all)) == genotype_to_arch(published("SNAS_moderate"))
    space = paper_space()
    assert space.decode("DARTS_V2") == space.decode(PUBLISHED_TEXT["DARTS_V2"]) == genotype_to_arch(v2)
    assert space.decode(space.encode(genotype_to_arch(v2))) == genotype_to_arch(v2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Genotype(normal=[('conv_9x9', 0)] * 8)", "only literals"),
        ("DARTS_V9", "no published genotype named 'DARTS_V9'; the suite ships: DARTS_V1"),
        (PUBLISHED_TEXT["DARTS_V2"].replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "input 5 does not exist"),
        (PUBLISHED_TEXT["DARTS_V2"].replace("'dil_conv_3x3'", "'conv_9x9'"), "unknown op 'conv_9x9'; ops are: none"),
        (
            "Genotype(normal=[('none', 0), ('none', 1), ('none', 0)], normal_concat=[2], reduce=[], reduce_concat=[2])",
            "3 pairs",
        ),
    ],
)
def test_bad_genotypes_get_one_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        paper_space().decode(text)
    assert "\n" not in str(err.value)


def test_any_number_of_inputs_per_node() -> None:
    """Nodes with 1, 3, 0 and 4 inputs (DSO-NAS, EnTranNAS-DST, SNAS edge_all): the evaluation
    network builds and runs, an empty node is zero, and the child equals the supernet's path."""
    text = (
        "Genotype(normal=[[('sep_conv_3x3', 0)], [('skip_connect', 0), ('max_pool_3x3', 1), ('dil_conv_3x3', 2)],"
        " [], [('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('skip_connect', 2), ('dil_conv_5x5', 3)]],"
        " normal_concat=[2, 3, 4, 5], reduce=[[('max_pool_3x3', 0), ('skip_connect', 1)], [('sep_conv_3x3', 2)],"
        " [('avg_pool_3x3', 1), ('skip_connect', 3)], [('sep_conv_3x3', 4)]], reduce_concat=[2, 3, 4, 5])"
    )
    g = parse_genotype(text)
    assert [len(n) for n in g.normal] == [1, 3, 0, 4]
    assert format_genotype(g) == text
    space = SPACES.get("darts")(preset("darts", "tiny"), FASHION)
    arch = space.decode(text)
    net = space.build_eval_network(arch).eval()
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    supernet = space.build_supernet().eval()
    child = space.build_child(arch, supernet).eval()
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(child(x), supernet(x, Selection.single_path(arch)), rtol=0, atol=0)
    outputs = []
    child.cells[0].register_forward_hook(lambda m, i, o: outputs.append(o))
    child(x)
    c = outputs[0].shape[1] // 4
    assert outputs[0][:, 2 * c : 3 * c].abs().sum() == 0  # node 4 has no input: zero


def test_drop_path_never_drops_an_identity_edge() -> None:
    torch.manual_seed(0)
    skip = Identity()
    cell = Cell(torch.nn.Identity(), torch.nn.Identity(), [[0], [1], [2], [3]], [skip] * 4, [2, 3, 4, 5], False)
    x = torch.rand(16, 3, 4, 4)
    out = cell(x, x, drop_prob=0.9)
    torch.testing.assert_close(out, torch.cat([x, x, x, x], 1))
    y = drop_path(torch.ones(4000, 1, 1, 1), 0.25)
    kept = (y != 0).float().mean()
    assert abs(float(kept) - 0.75) < 0.03 and torch.allclose(y[y != 0], torch.tensor(1 / 0.75))


@pytest.mark.parametrize("one_stage", [False, True])
def test_dsnas_credit_on_every_darts_op_equals_the_dummy_multiply(one_stage: bool) -> None:
    """Sep and dil convs and FactorizedReduce end in a BatchNorm (affine in the one-stage
    network: credit from its gradients; non-affine in the search network: from the output),
    average pooling and the identity are linear, max pooling is not, none is zero."""
    space = SPACES.get("darts")(preset("darts", "tiny"), FASHION)
    torch.manual_seed(0)
    net = space.build_supernet(one_stage=one_stage)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(10, (8,))
    for seed in range(3):
        arch = space.sample(torch.Generator().manual_seed(seed))
        sample = torch.tensor(arch)
        credits = {}
        for how in ("multiply", "cheap"):
            dummy = one_hot_rows(sample, space.max_candidates).requires_grad_()
            active = [[k] for k in arch]
            if how == "multiply":
                selection = Selection(active=active, weights=dummy)
            else:
                probes = [[] for _ in arch]
                selection = Selection(active=active, weights=dummy, probe=probes, info={"cheap_credit": True})
            torch.nn.functional.cross_entropy(net(x, selection), y).backward()
            credits[how] = dummy.grad.gather(1, sample[:, None]).squeeze(1)
            net.zero_grad(set_to_none=True)
        assert torch.allclose(credits["cheap"], credits["multiply"], rtol=1e-4, atol=1e-7), credits
        assert credits["multiply"].abs().max() > 1e-5


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_dilated_depthwise_equals_the_dilated_convolution(kernel: int, stride: int) -> None:
    """The CPU path (the pixel phases of a non-dilated convolution) gives the dilated
    convolution's output and gradients, channels_last or not."""
    from nasbench.spaces.darts_ops import DilatedDepthwise

    torch.manual_seed(0)
    conv = DilatedDepthwise(6, kernel, stride)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 6, 12, 12).to(memory_format=layout).requires_grad_()
        ours = conv(x)
        ref = torch.nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
        g = torch.randn_like(ref)
        (a,) = torch.autograd.grad(ours, conv.weight, g)
        (b,) = torch.autograd.grad(ref, conv.weight, g)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    odd = torch.randn(2, 6, 11, 11)  # odd sizes run the dilated convolution itself
    torch.testing.assert_close(conv(odd), torch.nn.Conv2d.forward(conv, odd))


def test_two_identical_steps_give_identical_gradients() -> None:
    """Reproducible runs (and resume) need bitwise-equal steps. Reduction cells of skip_connect
    (FactorizedReduce at stride 2) under channels_last gave different gradients from one identical
    step to the next on the CPU; the space keeps the default layout there (channels_last_on_cpu)."""
    from nasbench.context import RunContext

    space = SPACES.get("darts")(preset("darts", "tiny"), FASHION)
    assert not space.channels_last_on_cpu
    torch.manual_seed(0)
    ctx = RunContext.__new__(RunContext)
    ctx.space, ctx.device, ctx.channels_last = space, torch.device("cpu"), True
    net = ctx.place(space.build_supernet())
    assert all(p.is_contiguous() for p in net.parameters())
    x, y = torch.rand(64, 1, 28, 28), torch.randint(10, (64,))
    arch = tuple([4] * 14 + [3] * 14)  # sep convs in normal cells, skip_connect in reduction cells
    grads = []
    for _ in range(3):
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x, Selection.single_path(arch)), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert all(torch.equal(g, grads[0]) for g in grads)


def test_a_group_selection_runs_only_its_ops_in_its_cell() -> None:
    """``Selection.groups`` (EnTranNAS's transit cells): cell 1 follows a single path while cells 0
    and 2 run every op weighted; the other ops of cell 1 run no forward and get no gradient, and
    a group selection for every cell is the same as that selection itself."""
    space = SPACES.get("darts")(preset("darts", "tiny"), FASHION)
    torch.manual_seed(0)
    supernet = space.build_supernet()
    n = space.num_decisions
    mixture = Selection(active=[list(range(len(OPS)))] * n, weights=torch.softmax(torch.randn(n, len(OPS)), -1))
    arch = space.sample(torch.Generator().manual_seed(2))
    path = Selection.single_path(arch)
    ran: set[tuple[int, int, int]] = set()
    for i, cell in enumerate(supernet.cells):
        for e, block in enumerate(cell.edges):
            assert block.group == i
            for k, op in enumerate(block.candidates):
                op.register_forward_hook(lambda m, a, o, key=(i, e, k): ran.add(key))
    x = torch.rand(4, 1, 28, 28)
    supernet(x, Selection(mixture.active, mixture.weights, groups={1: path})).sum().backward()
    for i, cell in enumerate(supernet.cells):
        offset = EDGES_PER_CELL if cell.reduction else 0
        for e, block in enumerate(cell.edges):
            for k, op in enumerate(block.candidates):
                expected = k == arch[offset + e] if i == 1 else True
                assert ((i, e, k) in ran) == expected, (i, e, k)
                grads = [p.grad for p in op.parameters()]
                if i == 1 and not expected:
                    assert all(g is None for g in grads)
    supernet.eval()
    with torch.no_grad():
        every = {i: path for i in range(len(supernet.cells))}
        torch.testing.assert_close(
            supernet(x, Selection(mixture.active, mixture.weights, groups=every)), supernet(x, path)
        )
