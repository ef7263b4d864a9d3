"""The evaluation protocol of space=darts: cutout in the loader, and a two-stage method that
retrains the evaluation network (auxiliary head, drop-path growing per epoch) and deploys it
without the auxiliary head."""

from __future__ import annotations

import json

import torch

from conftest import preset
from nasbench.data import TensorImages
from nasbench.flops import count_params
from nasbench.loaders import TensorLoader
from nasbench.retrain_recipe import with_auxiliary
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec
from test_run_e2e import _tiny_run, check_summary

FASHION = InputSpec(1, 28, 10, (0.286,), (0.353,))
CIFAR = InputSpec(3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def _loader(cutout: int, seed: int = 0) -> TensorLoader:
    images = torch.full((40, 1, 12, 12), 255, dtype=torch.uint8)
    data = TensorImages(images, torch.zeros(40, dtype=torch.long))
    augment = {"crop_padding": 2, "hflip": True, "cutout": cutout, "cutout_fill": [0.25]}
    return TensorLoader(data, 10, shuffle=True, augment=augment, seed=seed)


def test_cutout_fills_a_clipped_square_with_the_mean() -> None:
    """DARTS's Cutout: a square of side L around a uniform centre, clipped at the border, set to
    the value a zero of the normalised image has (the data set's mean); images of ones here."""
    sides = set()
    for x, _ in _loader(cutout=6):
        for img in x:
            cut = (img[0] == 0.25).nonzero()
            assert len(cut) > 0
            rows, cols = cut[:, 0], cut[:, 1]
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            assert h * w == len(cut) and 3 <= h <= 6 and 3 <= w <= 6  # a rectangle, clipped at most to half
            sides.add((h, w))
    assert (6, 6) in sides and len(sides) > 1
    plain = next(iter(_loader(cutout=0)))[0]
    assert not (plain == 0.25).any()


def test_cutout_resumes_with_the_same_draws() -> None:
    """A pass resumed at batch 2 gives the unbroken pass's batches from there (the skipped batches'
    cutout draws are consumed too)."""
    full = [x for x, _ in _loader(cutout=6)]
    resumed = _loader(cutout=6)
    resumed.skip(2)
    for a, b in zip(full[2:], [x for x, _ in resumed], strict=True):
        torch.testing.assert_close(a, b)


def test_two_stage_method_retrains_the_evaluation_network(tmp_path) -> None:
    """method=random on space=darts: the retrain trains the evaluation network (eval_cells,
    eval_channels) with drop-path p * epoch / epochs, and the exported child is that network."""
    options = "+method.space_options.darts={eval_cells: 4, eval_channels: 6}"
    summary = _tiny_run(tmp_path / "run", "method=random", "space=darts", options)
    check_summary(summary, "random", "darts")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    drops = [r["drop_path_prob"] for r in records if r.get("phase") == "retrain"]
    epochs = summary["budget"]["retrain_epochs"]
    assert drops == [round(0.2 * e / epochs, 6) for e in range(epochs)]
    space = SPACES.get("darts")({**preset("darts", "tiny"), "eval_cells": 4, "eval_channels": 6}, FASHION)
    arch = space.decode(summary["arch"])
    assert summary["params"] == count_params(space.build_eval_network(arch))
    assert summary["params"] != count_params(space.build_child(arch))  # not the search network's child
    program = torch.export.load(str(tmp_path / "run" / "child.pt2")).module()
    assert program(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_auxiliary_head_adds_its_weighted_loss_and_is_not_deployed() -> None:
    """NetworkCIFAR in training mode returns (logits, auxiliary logits) from the head after cell
    2 * layers // 3; the retrain's loss is CE(logits) + 0.4 CE(aux) (DARTS train.py); evaluation
    mode and the deployed network return the logits alone."""
    space = SPACES.get("darts")(preset("darts", "paper"), CIFAR)
    net = space.build_eval_network(space.decode("DARTS_V2")).train()
    x, y = torch.rand(4, 3, 32, 32), torch.randint(10, (4,))
    logits, aux = net(x)
    assert logits.shape == aux.shape == (4, 10)
    ce = torch.nn.functional.cross_entropy
    loss = with_auxiliary(ce, 0.4)
    torch.testing.assert_close(loss((logits, aux), y), ce(logits, y) + 0.4 * ce(aux, y))
    torch.testing.assert_close(loss(logits, y), ce(logits, y))
    assert isinstance(net.eval()(x), torch.Tensor)
    deployed = space.deployable(net)
    assert deployed.auxiliary_head is None and isinstance(deployed.train()(x), torch.Tensor)


#: quark0/darts cnn/train_search.py (search) and cnn/train.py (evaluation) argument defaults
DARTS_PROTOCOL = {
    "batch_size": 64,
    "lr": 0.025,
    "lr_min": 0.001,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "search_epochs": 50,
    "grad_clip": 5.0,
    "valid_fraction": 0.5,
    "label_smoothing": 0.0,
    "retrain_epochs": 600,
    "retrain_batch_size": 96,
    "retrain_lr_min": 0.0,
    "arch_lr_multiplier": 1,
}


def test_darts_budget_and_paper_preset_are_the_published_protocol() -> None:
    from omegaconf import OmegaConf

    from conftest import ROOT

    budget = OmegaConf.load(ROOT / "experiments" / "conf" / "budget" / "darts.yaml")
    assert {k: budget[k] for k in DARTS_PROTOCOL} == DARTS_PROTOCOL
    paper = preset("darts", "paper")
    assert (paper["cells"], paper["channels"], paper["eval_cells"], paper["eval_channels"]) == (8, 16, 20, 36)
    assert (paper["auxiliary_weight"], paper["drop_path"], paper["cutout"]) == (0.4, 0.2, 16)
    # every budget has the retrain keys (null: the search's batch and floor)
    for name in ("cpu", "tiny", "paper", "nb201"):
        other = OmegaConf.load(ROOT / "experiments" / "conf" / "budget" / f"{name}.yaml")
        assert other.retrain_batch_size is None and other.retrain_lr_min is None
