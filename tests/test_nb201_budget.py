"""budget=nb201: NAS-Bench-201's published search recipe, key by key, and the two budget keys it
brought (a cosine that ends at ``lr_min``, the weights' gradient clipped at ``grad_clip``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import ROOT, run_entry
from nasbench.train import WarmupCosine, train_batch

#: D-X-Y/AutoDL-Projects: configs/nas-benchmark/algos/DARTS.config (batch_size, LR, eta_min, decay,
#: momentum, nesterov, warmup, epochs, criterion Softmax), RANDOM.config (test_batch_size),
#: exps/NAS-Bench-201-algos/DARTS-V1.py and GDAS.py (clip_grad_norm_ 5), the 25k/25k CIFAR-10 split
PUBLISHED = {
    "batch_size": 64,
    "lr": 0.025,
    "lr_min": 0.001,
    "weight_decay": 5e-4,
    "momentum": 0.9,
    "nesterov": True,
    "warmup_epochs": 0,
    "search_epochs": 50,
    "label_smoothing": 0.0,
    "grad_clip": 5.0,
    "eval_batch_size": 512,
    "valid_fraction": 0.5,
    "arch_lr_multiplier": 1,
}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_nb201_budget_is_the_published_recipe(key: str) -> None:
    budget = OmegaConf.load(ROOT / "experiments" / "conf" / "budget" / "nb201.yaml")
    assert budget[key] == PUBLISHED[key]


def test_cosine_ends_at_lr_min() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, base_lr=0.025, horizon_steps=100, final_lr=0.001)
    lrs = [sched.lr()]
    for _ in range(100):
        sched.step()
        lrs.append(sched.lr())
    assert lrs[0] == pytest.approx(0.025) and lrs[-1] == pytest.approx(0.001)
    assert lrs[50] == pytest.approx(0.001 + 0.5 * 0.024 * (1 + math.cos(math.pi / 2)))


@pytest.mark.parametrize("clip", [None, 0.05])
def test_grad_clip_bounds_the_step(clip: float | None) -> None:
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = torch.randn(16, 8) * 50, torch.randint(3, (16,))
    train_batch(model, x, y, nn.functional.cross_entropy, opt, grad_clip=clip)
    moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())]).norm()
    if clip is None:
        assert moved > 0.5  # the unclipped gradient is large: the control
    else:
        assert moved == pytest.approx(clip, rel=1e-4)


def test_a_run_under_the_nb201_budget(tmp_path: Path) -> None:
    """The preset composes and runs (shortened to seconds); its keys reach the record."""
    run_dir = tmp_path / "run"
    short = ["budget.search_epochs=1", "budget.retrain_epochs=1", "budget.train_subset=512", "budget.test_subset=100"]
    proc = run_entry(
        "run.py",
        "method=gdas",
        "space=nb201",
        "scale=tiny",
        "budget=nb201",
        "budget.workers=0",
        "budget.score_batches=2",
        *short,
        "progress=false",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["budget"]["name"] == "nb201" and summary["budget"]["grad_clip"] == 5.0
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs[0]["phase"] == "search" and epochs[0]["lr"] == pytest.approx(0.001)  # the cosine's end
