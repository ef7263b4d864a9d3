"""The consistency experiment end to end, as a user runs it: tiny scale, real training, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_entry, write_cifar10
from nasbench.nb201_truth import SHIPPED_TABLE

TINY = ("scale=tiny", "progress=false")


def ok(script: str, *args: str) -> None:
    done = run_entry(script, *args)
    assert done.returncode == 0, done.stderr[-3000:]


def table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "consistency.csv", dtype={"arch": str})


@pytest.fixture(scope="module")
def spos_run(tmp_path_factory) -> Path:
    """A finished tiny SPOS run (its folder holds supernet.pt)."""
    folder = tmp_path_factory.mktemp("runs") / "spos_run"
    ok("run.py", "method=spos", "space=shufflenet", *TINY, f"hydra.run.dir={folder}")
    return folder


@pytest.fixture(scope="module")
def experiment(spos_run: Path) -> Path:
    folder = spos_run.parent / "consistency_spos"
    args = ("method=spos", "space=shufflenet", *TINY, "n_archs=3", f"supernet_from={spos_run}", "retrain_seeds=2")
    ok("consistency.py", *args, f"hydra.run.dir={folder}")
    return folder


def test_the_run_record_holds_the_supernet_and_the_experiment_measures_what_summary_measured(
    spos_run: Path, experiment: Path
) -> None:
    assert (spos_run / "supernet.pt").stat().st_size > 10_000
    summary = json.loads((spos_run / "summary.json").read_text())
    result = json.loads((experiment / "consistency.json").read_text())
    rows = table(experiment)
    assert result["status"] == "complete" and result["picked_arch"] == summary["arch"]
    assert result["protocol"]["supernet"] == f"loaded from {spos_run}"
    # which code made it, as summary.json says (a commit when run from a clone)
    assert result["provenance"]["git_commit"] == summary["provenance"]["git_commit"]
    assert result["provenance"]["threads"] == summary["provenance"]["threads"]
    assert result["protocol"]["retrain_recipe"]["retrain_epochs"] == 3  # the tiny budget's
    assert int(rows["sampled"].sum()) == 3 and len(set(rows["arch"])) == len(rows)
    picked = rows[rows["picked"]].iloc[0]
    assert picked["arch"] == summary["arch"]
    # the same weights, the same BatchNorm recalibration batches, the same test set
    assert picked["search_acc"] == pytest.approx(summary["search_acc"], abs=1e-9)
    assert (rows["retrain_source"] == "retrained").all() and rows["retrain_acc"].between(0.3, 1).all()
    assert (rows["params"] > 0).all() and (rows["flops"] > 0).all()
    # the supernet was reused: no search phase, and every measurement left out of device-hours
    names = [p["name"] for p in result["phases"]]
    assert "search" not in names and names.count("consistency_retrain") == 2 * len(rows)  # two seeds each
    assert all(not p["counted"] for p in result["phases"]) and result["search_device_hours"] == 0


def test_retrains_are_reused_only_under_the_same_recipe(spos_run: Path, experiment: Path, tmp_path: Path) -> None:
    """A one-seed experiment reuses the two-seed one's retrains: their mean is its retrain_acc."""
    args = ("method=spos", "space=shufflenet", *TINY, "n_archs=3", f"supernet_from={spos_run}")
    again = tmp_path / "again"
    ok("consistency.py", *args, f"retrain_from={experiment}", f"hydra.run.dir={again}")
    first, second = table(experiment), table(again)
    assert (second["retrain_source"] == "reused").all()
    pd.testing.assert_series_equal(first["retrain_acc"], second["retrain_acc"])
    phases = json.loads((again / "consistency.json").read_text())["phases"]
    assert not [p for p in phases if p["name"] == "consistency_retrain"]
    other = run_entry("consistency.py", *args, "budget.retrain_epochs=1", f"retrain_from={experiment}")
    assert other.returncode == 2 and "retrained with retrain_epochs=3" in other.stderr
    assert "Traceback" not in other.stderr


def test_nb201_ground_truth_with_stratified_sampling(tmp_path: Path) -> None:
    """A search on a CIFAR-10 fixture in the real format; the retrain side is NAS-Bench-201's table,
    the one shipped in the package (no ``ground_truth=``: ``auto``)."""
    write_cifar10(tmp_path / "cifar")
    folder = tmp_path / "nb201"
    ok(
        "consistency.py",
        "method=dsnas",
        "space=nb201",
        "data=cifar10",
        f"data.root={tmp_path / 'cifar'}",
        *TINY,
        "n_archs=5",
        "sampling=stratified",
        f"hydra.run.dir={folder}",
    )
    truth = pd.read_csv(SHIPPED_TABLE).set_index("arch_str")["cifar10_test_acc_200"] / 100
    rows = table(folder)
    sampled = rows[rows["sampled"]]
    assert (rows["retrain_source"] == "nb201").all() and len(sampled) == 5
    for row in rows.itertuples():
        assert row.retrain_acc == pytest.approx(truth[row.arch])
        assert row.gt_rank == (truth > truth[row.arch]).sum() + 1
    # one architecture per fifth of the accuracy range, in order: the lowest fifth and the highest
    assert sampled["retrain_acc"].is_monotonic_increasing
    assert sampled["retrain_acc"].iloc[0] <= truth.quantile(0.2)
    assert sampled["retrain_acc"].iloc[-1] >= truth.quantile(0.8)
    result = json.loads((folder / "consistency.json").read_text())
    assert "cifar10_test_acc_200" in result["protocol"]["retrain_score"]
    assert [p["name"] for p in result["phases"] if p["counted"]] == ["search"]  # searched here


def test_two_retrain_seeds_give_the_noise_ceiling_and_the_seed_mean(experiment: Path) -> None:
    result = json.loads((experiment / "consistency.json").read_text())
    rows = table(experiment)
    seeds = [[float(a) for a in v.split(";")] for v in rows["retrain_accs"]]
    assert all(len(s) == 2 for s in seeds)
    assert rows["retrain_acc"].tolist() == pytest.approx([sum(s) / 2 for s in seeds])
    assert any(s[0] != s[1] for s in seeds)  # two initialisations, two results
    assert result["retrain_seeds"] == 2 and result["protocol"]["retrain_seeds"] == 2
    assert -1 <= result["noise_ceiling_tau_lo"] <= result["noise_ceiling_tau"] <= result["noise_ceiling_tau_hi"] <= 1
    assert len(result["kendall_tau_per_seed"]) == 2


def test_the_noise_ceiling_on_synthetic_records_with_a_known_answer(tmp_path: Path) -> None:
    """Seed 1 orders the architectures exactly as seed 0 in one record, in reverse in the other;
    the search side equals the seed mean; the parameter count orders them as seed 0."""
    from analysis.records import collect
    from analysis.tables import correlation_table

    n = 12
    seed0 = [0.5 + 0.01 * i for i in range(n)]
    for name, seed1 in (("agree", [a + 0.001 for a in seed0]), ("disagree", seed0[::-1])):
        folder = tmp_path / name
        folder.mkdir()
        mean = [(a + b) / 2 for a, b in zip(seed0, seed1)]
        pd.DataFrame(
            {
                "arch": [f"a{i}" for i in range(n)],
                "sampled": True,
                "picked": False,
                "params": [1000 + i for i in range(n)],
                "search_acc": mean,
                "retrain_acc": mean,
                "retrain_accs": [f"{a};{b}" for a, b in zip(seed0, seed1)],
            }
        ).to_csv(folder / "consistency.csv", index=False)
        record = {"status": "complete", "method": name, "estimator": "x", "space": "nb201", "data": "d", "seed": 0}
        (folder / "consistency.json").write_text(json.dumps({**record, "budget": {"name": "cpu"}, "protocol": {}}))
    corr = correlation_table(collect(tmp_path), bootstrap=200, seed=0, top_fraction=0.2, k=None).set_index("method")
    assert corr.loc["agree", "noise_ceiling_tau"] == pytest.approx(1.0)
    assert corr.loc["disagree", "noise_ceiling_tau"] == pytest.approx(-1.0)
    assert corr.loc["agree", "kendall_tau"] == pytest.approx(1.0)  # against the seed mean
    assert corr.loc["agree", "params_tau"] == pytest.approx(1.0)
    assert corr.loc["agree", "p_at_top5"] == 1.0 and corr.loc["agree", "br_at_0_5"] == 0.0


def test_the_report_reads_real_records(spos_run: Path, experiment: Path, tmp_path: Path) -> None:
    done = run_entry("../analysis/report.py", str(spos_run.parent), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-2000:]
    cost = pd.read_csv(tmp_path / "report" / "cost.csv")
    assert list(cost["method"]) == ["spos"] and cost["retrain_device_hours"].iloc[0] > 0
    corr = pd.read_csv(tmp_path / "report" / "correlation.csv")
    assert corr["n"].tolist() == [3] * len(corr)


@pytest.mark.parametrize(
    "args,message",
    [
        (("space=shufflenet", f"ground_truth={SHIPPED_TABLE}"), "needs space=nb201"),
        (("space=nb201", f"ground_truth={SHIPPED_TABLE}"), "not fashion_mnist"),
        (("space=shufflenet", "sampling=stratified"), "give ground_truth="),
        (("space=shufflenet", "sampling=best"), "unknown sampling 'best'"),
        (("space=shufflenet", "n_archs=2"), "at least 3 architectures"),
        (("space=shufflenet", "supernet_from=/nonexistent/run"), "holds no supernet.pt"),
        (("space=shufflenet", "retrain_from=/nonexistent/run"), "no readable consistency.json"),
        (("space=shufflenet", "retrain_seeds=0"), "retrain_seeds=0: give 1, or 2 and more"),
        (("space=shufflenet", "sampling=binned"), "sampling=binned is a NAS-Bench-201 protocol"),
        (("space=nb201", "sampling=table"), "sampling=table takes every architecture of the ground truth"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    done = run_entry("consistency.py", "method=spos", *TINY, *args, f"hydra.run.dir={tmp_path / 'x'}")
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0


def test_another_methods_supernet_is_refused(spos_run: Path, tmp_path: Path) -> None:
    args = ("method=dsnas", "space=shufflenet", *TINY, f"supernet_from={spos_run}", f"hydra.run.dir={tmp_path}")
    done = run_entry("consistency.py", *args)
    assert done.returncode == 2 and "holds a method=spos supernet" in done.stderr


def test_a_supernet_of_another_search_length_is_refused(spos_run: Path, tmp_path: Path) -> None:
    """tau against search epochs reads the length from the consistency record: it must be the supernet's."""
    args = ("method=spos", "space=shufflenet", *TINY, f"supernet_from={spos_run}", f"hydra.run.dir={tmp_path}")
    done = run_entry("consistency.py", *args, "budget.search_epochs=7")
    assert done.returncode == 2 and "holds a search_epochs=" in done.stderr, done.stderr[-2000:]
    assert "pass budget.search_epochs=" in done.stderr and "Traceback" not in done.stderr


def test_a_damaged_supernet_checkpoint_is_one_line(spos_run: Path, tmp_path: Path) -> None:
    from nasbench.errors import UserError
    from nasbench.records import RunRecord

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "supernet.pt").write_bytes((spos_run / "supernet.pt").read_bytes()[:5000])
    with pytest.raises(UserError, match="not a readable supernet checkpoint"):
        RunRecord.peek(truncated).load_supernet()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    import torch

    torch.save({"weights": torch.zeros(2)}, foreign / "supernet.pt")
    with pytest.raises(UserError, match="not a supernet checkpoint of this suite"):
        RunRecord.peek(foreign).load_supernet()


def test_the_report_draws_tau_against_supernet_epochs(tmp_path: Path) -> None:
    """Synthetic records of one method after 2 and 8 search epochs: the better-trained supernet
    orders the architectures as the retrain does, the other in reverse."""
    n = 10
    retrain = [0.5 + 0.01 * i for i in range(n)]
    for epochs, search in ((2, retrain[::-1]), (8, retrain)):
        folder = tmp_path / f"spos_{epochs}"
        folder.mkdir()
        pd.DataFrame(
            {
                "arch": [f"a{i}" for i in range(n)],
                "sampled": True,
                "picked": False,
                "search_acc": search,
                "retrain_acc": retrain,
            }
        ).to_csv(folder / "consistency.csv", index=False)
        record = {"status": "complete", "method": "spos", "estimator": "uniform", "space": "nb201", "data": "d"}
        budget = {"name": "cpu", "search_epochs": epochs}
        (folder / "consistency.json").write_text(json.dumps({**record, "seed": 0, "budget": budget, "protocol": {}}))
    done = run_entry("../analysis/report.py", str(tmp_path), "--out", str(tmp_path / "report"), "--bootstrap", "100")
    assert done.returncode == 0, done.stderr[-2000:]
    corr = pd.read_csv(tmp_path / "report" / "correlation.csv").set_index("search_epochs")
    assert corr.loc[2, "kendall_tau"] == pytest.approx(-1.0) and corr.loc[8, "kendall_tau"] == pytest.approx(1.0)
    assert (tmp_path / "report" / "figures" / "tau_epochs.png").stat().st_size > 1000
    assert "Tau against supernet training" in (tmp_path / "report" / "report.md").read_text()


def test_the_tau_epochs_figure_draws_the_shared_noise_ceiling_and_parameter_bar() -> None:
    """One ground truth for every experiment: the ceiling and the parameter-count tau are drawn
    (labelled with their values); experiments on different sets: neither, since no one bar fits."""
    from analysis.figures import tau_epochs_figure

    rows = [
        {
            "method": m,
            "estimator": m,
            "space": "nb201",
            "data": "d",
            "budget_name": "cpu",
            "seed": 0,
            "search_epochs": e,
            "kendall_tau": t,
            "kendall_tau_lo": t - 0.1,
            "kendall_tau_hi": t + 0.1,
            "params_tau": 0.69,
            "noise_ceiling_tau": 0.73,
            "noise_ceiling_tau_lo": 0.66,
            "noise_ceiling_tau_hi": 0.79,
        }
        for m, e, t in (("spos", 2, 0.0), ("spos", 8, 0.3), ("dsnas", 2, -0.3))
    ]
    shared = pd.DataFrame(rows)
    labels = tau_epochs_figure(shared).axes[0].get_legend_handles_labels()[1]
    assert "noise ceiling (retrain seed vs seed): 0.73" in labels and "parameter count alone: 0.69" in labels
    apart = shared.assign(noise_ceiling_tau=[0.73, 0.5, 0.6], params_tau=[0.69, 0.6, 0.6])
    labels = tau_epochs_figure(apart).axes[0].get_legend_handles_labels()[1]
    assert not any("noise ceiling" in x or "parameter count" in x for x in labels)
    assert sorted(labels) == ["dsnas @ nb201", "spos @ nb201"]
