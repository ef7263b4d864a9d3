"""NAS-Bench-201 ground truth: the stand-alone accuracy of every cell, from a CSV or from the official file.

Ground truth is the 200-epoch test accuracy averaged over all trained seeds, as in NAS-Bench-201 (Dong & Yang,
ICLR 2020): ``get_more_info(index, dataset, hp='200', is_random=False)`` on ``ori-test`` for CIFAR-10 and on
``x-test`` for CIFAR-100 and ImageNet16-120. The 12-epoch results (``hp='12'``, the ``*_valid_acc_12`` CSV
columns, metric ``valid12``) come from another, much shorter schedule and are never ground truth; they are only the
reward of the benchmark-rewarded baselines (methods/table_baselines.py), as in NAS-Bench-201's own R-EA, REINFORCE
and random search. Accuracies are returned as fractions in [0, 1]; nothing is cached on disk.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pandas as pd

from nasbench.errors import UserError, unknown_choice

DATASETS: dict[str, str] = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "imagenet16"}
OFFICIAL_NAMES: dict[str, str] = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "ImageNet16-120"}
METRICS = ("test", "valid", "valid12")
CSV_SUFFIXES = (".csv", ".csv.gz")
#: NAS-Bench-201's accuracies of all 15,625 cells, shipped with the package (its README gives the
#: columns, provenance, checksums and licences); the default ground truth of space=nb201
SHIPPED_TABLE = Path(__file__).resolve().parent / "tables" / "nb201_accuracies.csv.gz"
TORCH_SUFFIXES = (".pth", ".pt", ".pickle", ".pkl")
_ALIASES = {official: ours for ours, official in OFFICIAL_NAMES.items()}
_CSV_COLUMN = {"test": "{}_test_acc_200", "valid": "{}_valid_acc_200", "valid12": "{}_valid_acc_12"}
_HP = {"test": "200", "valid": "200", "valid12": "12"}  # the official file's schedule per metric
# (data set given to get_more_info, key of its answer, evaluation set), per the README's column table.
# CIFAR-10 "valid" is x-valid of the model trained on the 25k train split ('cifar10-valid').
_OFFICIAL_QUERY = {
    ("cifar10", "test"): ("cifar10", "test-accuracy", "ori-test"),
    ("cifar10", "valid"): ("cifar10-valid", "valid-accuracy", "x-valid"),
    ("cifar100", "test"): ("cifar100", "test-accuracy", "x-test"),
    ("cifar100", "valid"): ("cifar100", "valid-accuracy", "x-valid"),
    ("imagenet16", "test"): ("ImageNet16-120", "test-accuracy", "x-test"),
    ("imagenet16", "valid"): ("ImageNet16-120", "valid-accuracy", "x-valid"),
    # the 12-epoch schedule's validation accuracy: the reward of NAS-Bench-201's R-EA and REINFORCE
    ("cifar10", "valid12"): ("cifar10-valid", "valid-accuracy", "x-valid"),
    ("cifar100", "valid12"): ("cifar100", "valid-accuracy", "x-valid"),
    ("imagenet16", "valid12"): ("ImageNet16-120", "valid-accuracy", "x-valid"),
}
_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
_OPS = "none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3"


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # torch>=2.6 buries the cause in a long advice text about weights_only
        text = (
            "torch.load(weights_only=True): " + text.split("WeightsUnpickler error:", 1)[1].strip().split(". Please")[0]
        )
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


class NB201Truth:
    """Ground-truth accuracy tables, one per (data set, metric); each maps an arch string to a fraction."""

    def __init__(
        self,
        tables: dict[tuple[str, str], pd.Series],
        columns: dict[tuple[str, str], str],
        source: str,
        classes: pd.Series | None = None,
        seeds: dict[tuple[str, str], pd.DataFrame] | None = None,
    ):
        self.source = source
        self._tables = tables
        self._columns = columns
        self._ranks: dict[tuple[str, str], pd.Series] = {}
        #: arch string -> its isomorphism class (the CSV's ``unique_str``), where the file has it
        self.classes = classes
        #: per-seed accuracies (fractions; one column per seed) of a table the suite built
        self._seeds = seeds or {}

    def _key(self, dataset: str, metric: str) -> tuple[str, str]:
        name = _ALIASES.get(dataset, dataset)
        if (name, metric) in self._tables:  # a table the suite built (experiments/ground_truth.py)
            return name, metric
        if name not in DATASETS:
            raise unknown_choice("NAS-Bench-201 data set", dataset, DATASETS)
        if metric not in METRICS:
            raise unknown_choice("NAS-Bench-201 metric", metric, METRICS)
        if (name, metric) not in self._tables:
            have = ", ".join(f"{d}/{m}" for d, m in self._tables)
            epochs = _HP[metric]
            raise UserError(f"{self.source} has no {epochs}-epoch {metric} accuracy for {name}; it has: {have}")
        return name, metric

    def datasets(self) -> list[str]:
        """Our names of the data sets with test accuracies: NAS-Bench-201's (200 epochs) in
        ``DATASETS`` order, then those of a table the suite built."""
        own = [name for name in DATASETS if (name, "test") in self._tables]
        return own + sorted(d for d, m in self._tables if m == "test" and d not in DATASETS)

    def size(self) -> int:
        """How many distinct cells the tables hold (15,625 for the whole NAS-Bench-201 space)."""
        return len(set().union(*(t.index for t in self._tables.values())))

    def column(self, dataset: str, metric: str = "test") -> str:
        """A human-readable name of the numbers used for ``dataset``/``metric``, e.g. ``cifar10_test_acc_200``."""
        return self._columns[self._key(dataset, metric)]

    def table(self, dataset: str, metric: str = "test") -> pd.Series:
        """A copy of the table: arch string -> accuracy as a fraction in [0, 1]."""
        return self._tables[self._key(dataset, metric)].copy()

    def _lookup(self, series: pd.Series, arch_str: str, key: tuple[str, str]) -> float:
        if not isinstance(arch_str, str) or arch_str not in series.index:
            raise UserError(
                f"architecture {arch_str!r} is not in the {key[0]}/{key[1]} table of {self.source} "
                f"({len(series)} cells); expected a NAS-Bench-201 cell string like {_EXAMPLE} (ops: {_OPS})"
            )
        return series[arch_str]

    def has(self, arch_str: str, dataset: str, metric: str = "test") -> bool:
        """Whether the table holds ``arch_str`` (a table the suite built holds a sample only)."""
        return arch_str in self._tables[self._key(dataset, metric)].index

    def accuracy(self, arch_str: str, dataset: str, metric: str = "test") -> float:
        """The 200-epoch accuracy (mean over seeds) of ``arch_str`` as a fraction; metric "test" or "valid"."""
        key = self._key(dataset, metric)
        return float(self._lookup(self._tables[key], arch_str, key))

    def seed_accuracies(self, arch_str: str, dataset: str, metric: str = "test") -> list[float] | None:
        """Each seed's accuracy (fractions, seed order) of ``arch_str`` where the table has seed
        columns (``<column>_seed<k>``, written by experiments/ground_truth.py); else None. Their
        mean is :meth:`accuracy`; two or more give the consistency experiment its noise ceiling."""
        frame = self._seeds.get(self._key(dataset, metric))
        if frame is None or arch_str not in frame.index:
            return None
        return [float(v) for v in frame.loc[arch_str]]

    def rank(self, arch_str: str, dataset: str, metric: str = "test") -> int:
        """Rank of ``arch_str`` among all cells of the table, 1 = best; ties share the best rank (method "min")."""
        key = self._key(dataset, metric)
        if key not in self._ranks:
            self._ranks[key] = self._tables[key].rank(ascending=False, method="min").astype(int)
        return int(self._lookup(self._ranks[key], arch_str, key))


def ground_truth_path(value: object, space: str, data: str | None = None) -> Path | None:
    """The file a ``ground_truth=`` (or ``stratify_by=``) value names. ``auto``: the shipped
    NAS-Bench-201 table (:data:`SHIPPED_TABLE`) for space=nb201, on one of its data sets where
    ``data`` is given, and None (no table: retrain) elsewhere; null or empty: None; anything else
    is a path to a table or an official benchmark file."""
    if value is None or str(value) == "":
        return None
    if str(value) == "auto":
        return SHIPPED_TABLE if space == "nb201" and (data is None or data in DATASETS) else None
    return Path(str(value)).expanduser()


def load_ground_truth(path: str | Path = SHIPPED_TABLE) -> NB201Truth:
    """Load a table like the shipped one (.csv, or gzipped .csv.gz; :data:`SHIPPED_TABLE` by default) or an
    official NAS-Bench-201 file (.pth/.pt/.pickle/.pkl).

    The CSV layout is the shipped table's (nasbench/tables/README.md): ``arch_str`` plus ``<p>_test_acc_200``
    (and optionally ``<p>_valid_acc_200``) columns in percent for p in cifar10, cifar100, imagenet16; it may hold a
    subset of the cells and data sets. An official file is read with ``nas_201_api.NASBench201API``.
    """
    p = Path(path).expanduser()
    expected = (
        "a .csv (or .csv.gz) like nb201_accuracies.csv or an official NAS-Bench-201 file (.pth, .pt, .pickle, .pkl)"
    )
    if not p.exists():
        raise UserError(f"NAS-Bench-201 ground-truth file {p} does not exist; expected {expected}")
    if p.is_dir():
        raise UserError(f"NAS-Bench-201 ground truth {p} is a directory; expected a file: {expected}")
    suffix = ".csv.gz" if p.name.lower().endswith(".csv.gz") else p.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _load_csv(p)
    if suffix in TORCH_SUFFIXES:
        return _load_official(p)
    raise UserError(f"NAS-Bench-201 ground-truth file {p} has unknown suffix {suffix!r}; expected {expected}")


def _load_csv(p: Path) -> NB201Truth:
    try:
        df = pd.read_csv(p, dtype={"arch_str": str})
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"cannot read the NAS-Bench-201 CSV {p} ({_first_line(exc)}); expected a CSV file") from None
    tests = [_CSV_COLUMN["test"].format(prefix) for prefix in DATASETS.values()]
    built = suite_columns(df.columns)
    missing = [] if "arch_str" in df.columns else ["arch_str"]
    if not any(col in df.columns for col in tests) and not built:
        missing.append("one of " + ", ".join(tests))
    if missing:
        raise UserError(
            f"NAS-Bench-201 CSV {p} lacks required columns: {'; '.join(missing)} "
            "(accuracies in percent, as in the shipped nasbench/tables/nb201_accuracies.csv.gz)"
        )
    arch = df["arch_str"]
    if arch.isna().any():
        raise UserError(f"NAS-Bench-201 CSV {p} has an empty arch_str on line {int(arch.isna().argmax()) + 2}")
    if arch.duplicated().any():
        raise UserError(
            f"NAS-Bench-201 CSV {p} lists arch_str {arch[arch.duplicated()].iloc[0]!r} twice; expected each once"
        )
    tables, columns, seeds = {}, {}, {}
    wanted = [(name, m, _CSV_COLUMN[m].format(prefix)) for name, prefix in DATASETS.items() for m in METRICS]
    wanted += [(name, "test", col) for name, col in built.items()]
    for name, metric, col in wanted:
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | (values < 0) | (values > 100)
        if bad.any():
            row = int(bad.argmax())
            raise UserError(
                f"column {col} of {p} has {df[col].iloc[row]!r} on line {row + 2} ({arch.iloc[row]}); "
                "expected a number, a percentage from 0 to 100"
            )
        if len(values) > 1 and values.max() <= 1.0:
            raise UserError(f"column {col} of {p} looks like fractions (max {values.max()}); expected percentages")
        tables[(name, metric)] = pd.Series(values.to_numpy() / 100.0, index=pd.Index(arch, name="arch_str"), name=col)
        columns[(name, metric)] = col
        if name not in DATASETS:
            found = _seed_columns(df, col, p)
            if found is not None:
                seeds[(name, metric)] = found.set_axis(pd.Index(arch, name="arch_str"))
    classes = None
    if "unique_str" in df.columns and df["unique_str"].notna().all():
        classes = pd.Series(df["unique_str"].astype(str).to_numpy(), index=pd.Index(arch, name="arch_str"))
    return NB201Truth(tables, columns, f"csv:{p.resolve()}", classes, seeds)


def _seed_columns(df: pd.DataFrame, col: str, p: Path) -> pd.DataFrame | None:
    """The ``<col>_seed<k>`` columns of a suite-built table as fractions in seed order (None
    where it has fewer than two); a seed column that is not a percentage is a one-line error."""
    names = sorted(
        (int(m["k"]), c) for c in df.columns if (m := re.fullmatch(re.escape(col) + r"_seed(?P<k>[0-9]+)", str(c)))
    )
    if len(names) < 2:
        return None
    frame = df[[c for _, c in names]].apply(pd.to_numeric, errors="coerce")
    bad = frame.isna() | (frame < 0) | (frame > 100)
    if bad.to_numpy().any():
        row, k = (int(i[0]) for i in bad.to_numpy().nonzero())
        raise UserError(
            f"column {frame.columns[k]} of {p} has {df[frame.columns[k]].iloc[row]!r} on line {row + 2};"
            " expected a number, a percentage from 0 to 100"
        )
    return frame / 100.0


def suite_columns(columns) -> dict[str, str]:
    """Data set -> column of a table the suite built: ``<data>_test_acc_<epochs>`` for a data set
    that is not NAS-Bench-201's (experiments/ground_truth.py writes ``fashion_mnist_test_acc_6``)."""
    found: dict[str, str] = {}
    for col in columns:
        match = re.fullmatch(r"(?P<data>[a-z0-9_]+?)_test_acc_(?P<epochs>[0-9]+)", str(col))
        if match and match["data"] not in DATASETS:
            found.setdefault(match["data"], str(col))
    return found


def _numpy_safe_globals() -> list:
    """NumPy scalar types, which torch.load(weights_only=True) refuses by default, in case the file holds any."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    kinds = ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
    return [np.dtype, core.multiarray.scalar, *(getattr(np.dtypes, k) for k in kinds if hasattr(np.dtypes, k))]


def _load_official(p: Path) -> NB201Truth:
    try:
        import torch
        from nas_201_api import NASBench201API
    except ImportError as exc:
        raise UserError(f"reading {p} needs the nas-bench-201 package and torch ({_first_line(exc)})") from None
    expected = "expected an official NAS-Bench-201 file such as NAS-Bench-201-v1_1-096897.pth"
    try:
        # NASBench201API calls torch.load itself; torch < 2.5 has no safe_globals (and loads with
        # weights_only=False by default, which needs none)
        allow = getattr(torch.serialization, "safe_globals", None)
        with allow(_numpy_safe_globals()) if allow else contextlib.nullcontext():
            api = NASBench201API(str(p), verbose=False)
    except Exception as exc:  # torch.load and the API's asserts fail in many ways; report all in one line
        raise UserError(f"nas_201_api cannot load {p} ({_first_line(exc)}); {expected}") from None
    tables, columns = {}, {}
    for key, (name, field, evalset) in _OFFICIAL_QUERY.items():
        values = {}
        try:
            for index in api.evaluated_indexes:
                hp = _HP[key[1]]
                if name not in api.arch2infos_dict[index][hp].get_dataset_names():
                    continue
                info = api.get_more_info(index, name, iepoch=None, hp=hp, is_random=False)
                if field in info:
                    values[api.meta_archs[index]] = float(info[field]) / 100.0
        except Exception as exc:
            raise UserError(f"{p}: bad {_HP[key[1]]}-epoch {name} results ({_first_line(exc)}); {expected}") from None
        if values:
            hp = _HP[key[1]]
            series_name = _CSV_COLUMN[key[1]].format(key[0])
            tables[key] = pd.Series(values, name=series_name).rename_axis("arch_str")
            query = f"get_more_info({name!r}, hp={hp!r}, is_random=False)"
            columns[key] = f"{query}[{field!r}] ({evalset}, mean over seeds)"
    if not any(metric == "test" for _, metric in tables):
        raise UserError(f"{p} holds no 200-epoch test accuracies for cifar10, cifar100 or ImageNet16-120; {expected}")
    return NB201Truth(tables, columns, f"nas_201_api:{p.resolve()} (hp=200, mean over seeds)")
