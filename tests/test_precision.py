"""Mixed precision: ``precision=bf16`` autocasts the training forward; weights, their gradients,
optimizer state and the loss stay float32; ``auto`` is fp32 on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import method_space_cover, pair_params, tiny_space
from nasbench.device import autocast, compiled, configure, precision
from nasbench.errors import UserError
from nasbench.train import plain_step, train_batch, weight_optimizer
from test_run_e2e import _tiny_run, check_summary

CPU = torch.device("cpu")


@pytest.fixture
def restore_precision():
    yield
    configure(CPU, "fp32")


def test_auto_is_fp32_on_the_cpu(restore_precision) -> None:
    assert configure(CPU, "auto") == "fp32" == precision()
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(UserError, match="unknown precision 'half'; choose one of: auto, fp32, bf16"):
        configure(CPU, "half")


def test_bf16_autocasts_the_forward_only(restore_precision) -> None:
    assert configure(CPU, "bf16") == "bf16" == precision()
    torch.manual_seed(0)
    child = tiny_space().build_child((0, 1, 2, 3))
    seen: dict[str, torch.dtype] = {}
    child.register_forward_hook(lambda m, i, o: seen.__setitem__("logits", o.dtype))
    x, y = torch.rand(8, 1, 28, 28), torch.randint(10, (8,))
    optimizer = weight_optimizer(child, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0})
    before = [p.detach().clone() for p in child.parameters()]
    out = train_batch(child, x, y, torch.nn.CrossEntropyLoss(), optimizer)
    assert seen["logits"] == torch.bfloat16
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in child.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(child.parameters(), before))
    configure(CPU, "fp32")
    train_batch(child, x, y, torch.nn.CrossEntropyLoss(), optimizer)
    assert seen["logits"] == torch.float32


# the tiny budget made smaller still: every code path of every method runs, in a few steps
SMALL = ("budget.train_subset=384", "budget.test_subset=100", "budget.finetune_epochs=1", "budget.retrain_epochs=1")


# the README's main command in the inner loop, the rest in the test command
@pytest.mark.parametrize(("method", "space"), pair_params(method_space_cover(), [("dsnas", "shufflenet")]))
def test_every_method_and_every_space_complete_under_bf16(method: str, space: str, tmp_path) -> None:
    """bf16 autocast on the CPU finds the dtype bugs a GPU run would hit (ProxylessNAS's
    probed candidates, recomputed in the backward outside autocast, met fp32 weights). Every
    method on two of its spaces, every space several times (conftest.method_space_cover); the
    fp32 end-to-end test runs every pair."""
    summary = _tiny_run(tmp_path / "bf16", f"method={method}", f"space={space}", "precision=bf16", "device=cpu", *SMALL)
    check_summary(summary, method, space, SMALL)
    assert summary["precision"] == "bf16"
    records = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if "loss" in r]  # training epochs (SPOS's select line has none)
    assert losses and all(math.isfinite(v) for v in losses)
    assert all(p["images_per_s"] > 0 for p in summary["phases"] if p["name"] in ("search", "finetune", "retrain"))


@pytest.mark.slow
def test_compile_gives_the_eager_childs_training_steps(restore_precision) -> None:
    """``compile=true``: the stand-alone child's step runs through torch.compile (inductor; about
    50 s of compilation on 2 CPU cores) and trains as the eager step does."""
    space = tiny_space("nb201")
    x, y = torch.rand(16, 1, 28, 28), torch.randint(10, (16,))
    losses, weights = {}, {}
    for flag in (False, True):
        configure(CPU, "fp32", compile_child=flag)
        torch.manual_seed(0)
        child = space.build_child(space.sample(torch.Generator().manual_seed(3)))
        optimizer = weight_optimizer(child, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0})
        step = plain_step(child, optimizer, torch.nn.CrossEntropyLoss())
        assert isinstance(compiled(child), torch._dynamo.eval_frame.OptimizedModule) == flag
        losses[flag] = [float(step(x, y).loss) for _ in range(3)]
        weights[flag] = torch.cat([p.detach().flatten() for p in child.parameters()])
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    diff = (weights[True] - weights[False]).abs()
    assert torch.allclose(weights[True], weights[False], atol=1e-5), (
        f"max |diff| {float(diff.max()):.3g} at {int(diff.argmax())}; {int((diff > 1e-5).sum())} of {diff.numel()}"
        f" weights differ; losses {losses}; {torch.get_num_threads()} threads"
    )


OFFICIAL_OPTIONS = [
    ("dsnas", "nb201", ("method.paths_per_step=2",)),
    ("snas", "nb201", ("method.resource_lambda=1.0",)),
    ("gdas", "nb201", ("estimator.form=official",)),
    ("spos", "shufflenet", ("+method.space_options.shufflenet.supernet_bn_affine=false",)),
    ("dsonas", "dsonas", ("method.adaptive=count", "method.prune_every=1")),  # optimizer_split_flops.py
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "space", "options"), OFFICIAL_OPTIONS, ids=lambda v: str(v))
def test_official_options_complete_under_bf16(method: str, space: str, options: tuple[str, ...], tmp_path) -> None:
    """The options that reproduce each official run (docs/fidelity.md: k paths per step, SNAS's
    resource penalty, GDAS's forward_gdas, SPOS's non-affine supernet BatchNorm) take code paths
    the defaults do not; under bf16 autocast they train with finite float32 losses as well."""
    summary = _tiny_run(
        tmp_path / "bf16", f"method={method}", f"space={space}", "precision=bf16", "device=cpu", *SMALL, *options
    )
    assert summary["status"] == "complete" and summary["precision"] == "bf16"
    records = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    assert 0.0 <= summary["final_acc"] <= 1.0
    for option in options:  # the option reached the run (its resolved config records it)
        path, value = option.lstrip("+").split("=")
        node = summary["config"]
        for key in path.split("."):
            node = node[key]
        assert str(node).lower() == value.lower()
