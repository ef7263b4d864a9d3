"""A tiny run end to end, as a user runs it: the run record, the exported child, the guard."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, method_space_pairs, method_space_quick, pair_params, run_entry, tiny_space
from nasbench.data import load_data
from nasbench.records import SUMMARY_KEYS, RunRecord


def _tiny_run(run_dir: Path, *overrides: str) -> dict:
    proc = run_entry("run.py", "scale=tiny", "progress=false", f"hydra.run.dir={run_dir}", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "dsnas_tiny"
    _tiny_run(run_dir, "method=dsnas", "space=shufflenet")
    return run_dir


def check_summary(summary: dict, method: str, space: str, budget_overrides: tuple[str, ...] = ()) -> None:
    """The run-record contract (README, "The run record") (``budget_overrides``: the run's ``budget.k=v`` arguments)."""
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["status"] == "complete" and summary["method"] == method and summary["space"] == space
    assert 0.0 <= summary["search_acc"] <= 1.0 and 0.0 <= summary["final_acc"] <= 1.0
    assert summary["params"] > 0 and summary["flops"] > 0
    assert summary["compile"] is False  # the default: the child's step is not compiled
    assert summary["precision"] in {"fp32", "bf16"} and summary["world_size"] == summary["num_devices"] >= 1
    counted = [p for p in summary["phases"] if p["counted"]]
    assert counted and all(p["wall_s"] > 0 and p["peak_mem_bytes"] > 0 for p in counted)
    for p in summary["phases"]:
        assert p["device_hours"] == pytest.approx(p["wall_s"] * p["num_devices"] / 3600)
        assert set(p) >= {
            "name",
            "wall_s",
            "device",
            "num_devices",
            "device_hours",
            "peak_mem_bytes",
            "epochs",
            "images",
        }
    assert summary["total_device_hours"] == pytest.approx(sum(p["device_hours"] for p in counted))
    assert summary["peak_mem_bytes"] == max(p["peak_mem_bytes"] for p in counted)
    names = [p["name"] for p in counted]
    assert "search" in names
    if summary["one_stage"]:
        assert "retrain" not in names
    else:  # two-stage: the retrain from scratch is counted in the total, with the budget's epochs
        (retrain,) = [p for p in counted if p["name"] == "retrain"]
        assert retrain["epochs"] == summary["budget"]["retrain_epochs"] >= 1
    budget = OmegaConf.load(ROOT / "experiments" / "conf" / "budget" / f"{summary['scale']}.yaml")
    budget.merge_with_dotlist([o.removeprefix("budget.") for o in budget_overrides])
    # a space preset's budget_overrides (darts), applied for every method and recorded as such
    space_overrides = summary["budget"].get("space_overrides", {})
    preset = OmegaConf.load(ROOT / "experiments" / "conf" / "space" / f"{summary['space']}.yaml").presets
    wanted = OmegaConf.to_container(preset[summary["scale"]]).get("budget_overrides", {})
    given = {o.removeprefix("budget.").split("=")[0] for o in budget_overrides}
    assert space_overrides == {k: v for k, v in wanted.items() if k not in given}
    budget.merge_with(space_overrides)
    recorded = {k: v for k, v in summary["budget"].items() if k not in ("data", "augmentation", "space_overrides")}
    assert recorded == {k: v for k, v in OmegaConf.to_container(budget).items() if k != "data"}
    assert summary["budget"]["data"] == summary["data"]


# every pair in the test command; every method once and every space at least once in the inner loop
@pytest.mark.parametrize(("method", "space"), pair_params(method_space_pairs(), method_space_quick()))
def test_every_method_on_every_space_runs_a_tiny_search(method: str, space: str, tmp_path: Path) -> None:
    summary = _tiny_run(tmp_path / "run", f"method={method}", f"space={space}")
    check_summary(summary, method, space)
    searched = tiny_space(space)  # the arch is a valid architecture of the space, in its own format
    assert summary["arch_ops"] == searched.describe(searched.decode(summary["arch"]))
    assert summary["final_acc"] > 0.2, "the deployed child learns well above chance (0.1)"
    saved = RunRecord.peek(tmp_path / "run").load_supernet()  # the search stage's end, for consistency.py
    assert (saved["method"], saved["space"], saved["arch"]) == (method, space, summary["arch"])
    assert saved["state_dict"] and (saved["alpha"] is None) == (method in ("spos", "random"))


def test_tiny_run_writes_a_complete_valid_record(tiny_run: Path) -> None:
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "metrics.jsonl",
        "summary.json",
        "child.pt2",
        "child_state.pt",
        "supernet.pt",
    ):
        assert (tiny_run / name).is_file(), name
    assert not list(tiny_run.glob(".*.tmp*")), "a temporary file was left behind"
    summary = json.loads((tiny_run / "summary.json").read_text())
    check_summary(summary, "dsnas", "shufflenet")
    assert summary["estimator"] == "dsnas" and summary["data"] == "fashion_mnist" and summary["seed"] == 0
    assert summary["input_shape"] == [1, 28, 28] and summary["accuracy_unit"] == "fraction"
    assert [p["name"] for p in summary["phases"]] == ["search", "eval_search", "finetune", "export"]
    search, _, finetune, _ = summary["phases"]
    assert (search["epochs"], finetune["epochs"]) == (1, 2)
    # search trains on the split's training part: 2048 images less the 25% held out
    assert search["images"] == search["steps"] * 64 == 1536
    assert finetune["images"] == finetune["steps"] * 64 == 2 * 2048
    assert summary["final_acc"] > 0.3, "the tiny child should learn well above chance (0.1)"

    space = tiny_space()
    arch = space.decode(summary["arch"])
    assert summary["arch_ops"] == space.describe(arch)
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in records] == [("search", 1), ("finetune", 1), ("finetune", 2)]
    assert all({"loss", "train_acc", "wall_s", "lr"} <= set(r) for r in records)
    assert 0.5 < records[0]["alpha_entropy"] < math.log(4) - 1e-3  # alpha moved from uniform, not collapsed
    assert summary["extra"]["alpha_lr"] == pytest.approx(1e-3 * 30)  # published lr x the tiny scale's multiplier
    config = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    assert config.method.name == "dsnas" and config.estimator.name == "dsnas" and config.scale.name == "tiny"


PLAIN_TORCH_EVAL = r"""
import importlib.util, sys
sys.path.append(sys.argv[1])               # the interpreter's site-packages, without its .pth files
assert importlib.util.find_spec("nasbench") is None and importlib.util.find_spec("methods") is None
import torch
model = torch.export.load(sys.argv[2]).module()
data = torch.load(sys.argv[3])
correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in zip(data["x"].split(100), data["y"].split(100)))
print(correct / len(data["y"]))
"""


def test_exported_child_reproduces_final_acc_with_plain_torch(tiny_run: Path, tmp_path: Path) -> None:
    summary = json.loads((tiny_run / "summary.json").read_text())
    data = load_data(OmegaConf.load(ROOT / "experiments" / "conf" / "data" / "fashion_mnist.yaml"))
    n = summary["test_images"]
    torch.save({"x": data.test.images[:n].float() / 255, "y": data.test.labels[:n]}, tmp_path / "test.pt")
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            PLAIN_TORCH_EVAL,
            sysconfig.get_paths()["purelib"],
            str(tiny_run / "child.pt2"),
            str(tmp_path / "test.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip()) == pytest.approx(summary["final_acc"], abs=1 / n + 1e-12)


def test_child_state_rebuilds_the_exported_network(tiny_run: Path) -> None:
    state = torch.load(tiny_run / "child_state.pt", weights_only=True)
    space = tiny_space()
    child = space.build_child(space.decode(state["arch"]))
    child.load_state_dict(state["state_dict"])
    exported = torch.export.load(tiny_run / "child.pt2").module()
    x = torch.rand(5, *state["input_shape"])
    torch.testing.assert_close(child.eval()(x), exported(x), rtol=1e-4, atol=1e-5)


def test_a_complete_run_is_never_overwritten(tiny_run: Path) -> None:
    before = {
        p.name: p.read_bytes()
        for p in (tiny_run / "summary.json", tiny_run / "child.pt2", tiny_run / ".hydra" / "config.yaml")
    }
    proc = run_entry("run.py", "scale=tiny", "progress=false", "seed=5", f"hydra.run.dir={tiny_run}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tiny_run} already holds a complete run; choose another hydra.run.dir or pass overwrite=true"
    ]
    after = {
        p.name: p.read_bytes()
        for p in (tiny_run / "summary.json", tiny_run / "child.pt2", tiny_run / ".hydra" / "config.yaml")
    }
    assert before == after


def test_flops_penalty_steers_alpha_to_cheaper_ops(tmp_path: Path) -> None:
    """A penalty that dominates the loss, applied from 0 MFLOPs: after 144 search steps (6 epochs
    of the 1536-image search split) the most expensive candidate of every layer (Shuffle7x7 here)
    has the lowest probability, and the expected MACs of the choice blocks under p fall below
    their uniform expectation. (The sampled penalty gradient changes sign from step to step, so
    under Adam the drift is slow.)"""
    summary = _tiny_run(
        tmp_path / "run",
        "method.flops_penalty.coef=2000",
        "method.flops_penalty.threshold_mflops=0",
        "budget.search_epochs=6",
    )
    macs = tiny_space().candidate_macs().float()
    probs = torch.tensor(summary["extra"]["alpha_probs"])
    assert torch.equal(probs.argmin(1), macs.argmax(1)), probs
    assert float((probs * macs).sum()) < 0.97 * float(macs.mean(1).sum())


def test_uniform_estimator_under_the_dsnas_pipeline(tmp_path: Path) -> None:
    """The uniform-prior ablation: same pipeline, alpha never moves from its initial values."""
    summary = _tiny_run(tmp_path / "run", "method=dsnas", "estimator=uniform")
    check_summary(summary, "dsnas", "shufflenet")
    assert summary["estimator"] == "uniform"
    probs = torch.tensor(summary["extra"]["alpha_probs"])
    torch.testing.assert_close(probs, torch.full_like(probs, 0.25), atol=0.02, rtol=0)
