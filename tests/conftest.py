"""Shared fixtures: the repository root, the interpreter, and how to run the entry points."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # pytest-xdist workers share the cores: one torch thread each, in this process and in every
    # command it starts (two 2-thread torch processes on 2 cores run about 10x slower)
    os.environ["OMP_NUM_THREADS"] = "1"

from entry_process import run_script  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--estimator-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (an estimator defined outside the package, its folder on PYTHONPATH) before"
        " collection, so the contract tests over every registered estimator cover it (docs/estimators.md)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for module in config.getoption("--estimator-module"):
        importlib.import_module(module)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For pytest-xdist's ``--dist loadgroup`` (pyproject.toml): the tests that share a
    module-scoped fixture (a run they all read) form one group, run by one worker, so that the
    fixture is made once; and the ``slow`` tests are handed out first, so that no worker is left
    with a minutes-long test at the end. Without xdist the order changes and nothing else."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures and any(defs[-1].scope == "module" for defs in fixtures.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def run_entry(
    script: str, *args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python experiments/<script> args...`` as a user would, in a process of its own,
    capturing its output (tests/entry_process.py)."""
    return run_script(ROOT / "experiments" / script, *args, cwd=cwd or ROOT, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def tiny_space(name: str = "shufflenet"):
    """A space at the tiny preset for a 1x28x28, 10-class input, built from the shipped config."""
    from omegaconf import OmegaConf

    from nasbench.data import input_spec
    from nasbench.spaces import SPACES

    conf = ROOT / "experiments" / "conf"
    space_cfg = OmegaConf.load(conf / "space" / f"{name}.yaml")
    spec = input_spec(OmegaConf.load(conf / "data" / "fashion_mnist.yaml"))
    return SPACES.get(name)(OmegaConf.to_container(space_cfg.presets.tiny), spec)


def method_space_pairs() -> list[tuple[str, str]]:
    """Every registered (method, space) pair the method runs on (``Method.supports``)."""
    from methods.base import METHODS
    from nasbench.spaces import SPACES

    return [(m, s) for m in METHODS.names() for s in SPACES.names() if METHODS.get(m).supports(SPACES.get(s))]


def method_space_cover(per_method: int = 2) -> list[tuple[str, str]]:
    """Every registered method on ``per_method`` of its spaces, rotated so that every space is
    met several times: for checks whose bugs live in a method's or a space's own code (bf16
    dtypes), where running all pairs twice (fp32 end to end, then bf16) cost CI ~15 min."""
    pairs = method_space_pairs()
    methods = sorted({m for m, _ in pairs})
    cover = []
    for i, m in enumerate(methods):
        spaces = sorted(s for n, s in pairs if n == m)
        rotated = spaces[i % len(spaces) :] + spaces[: i % len(spaces)]
        cover += [(m, s) for s in rotated[:per_method]]
    missing = {s for _, s in pairs} - {s for _, s in cover}
    cover += [next(p for p in pairs if p[1] == s) for s in sorted(missing)]
    default = ("dsnas", "shufflenet")  # the README's main command
    return cover if default in cover else [default, *cover]


def method_space_quick(order: tuple[str, ...] = ("shufflenet", "nb201", "dsonas", "darts")) -> list[tuple[str, str]]:
    """Every registered method once, on the first of its spaces in ``order`` (cheapest first at
    tiny scale), plus every space no method met that way, with its first method."""
    pairs = method_space_pairs()
    rank = {s: order.index(s) if s in order else len(order) for _, s in pairs}
    quick = [min((p for p in pairs if p[0] == m), key=lambda p: rank[p[1]]) for m in dict.fromkeys(m for m, _ in pairs)]
    met = {s for _, s in quick}
    return quick + [next(p for p in pairs if p[1] == s) for s in dict.fromkeys(s for _, s in pairs) if s not in met]


def pair_params(pairs: list[tuple[str, str]], fast: list[tuple[str, str]]) -> list:
    """(method, space) pairs as pytest parameters, each outside ``fast`` marked ``slow``: the
    whole list runs in the test command, ``fast`` in the ``-m "not slow"`` inner loop."""
    return [pytest.param(m, s, id=f"{m}-{s}", marks=() if (m, s) in fast else pytest.mark.slow) for m, s in pairs]


def preset(space: str, scale: str) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "experiments" / "conf" / "space" / f"{space}.yaml")
    return OmegaConf.to_container(cfg.presets[scale])


def write_estimator_plugin(folder: Path, name: str, source: str, config: str) -> Path:
    """An estimator defined outside the package, as docs/estimators.md lays it out: ``<name>.py``
    (``source``) and ``conf/estimator/<name>.yaml`` (``config``) in ``folder``. Returns ``folder``."""
    (folder / "conf" / "estimator").mkdir(parents=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    (folder / "conf" / "estimator" / f"{name}.yaml").write_text(config)
    return folder


def write_cifar10(root: Path, per_batch: int = 20) -> None:
    """CIFAR-10 as torchvision reads it: pickled dicts (str keys once unpickled with latin1) of
    uint8 rows (3072 = 3x32x32, channel-major) and labels, plus batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, 0] = np.array(labels, dtype=np.uint8) * 20  # label-dependent pixel, checked below
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}, f)


def write_image_folder(
    root: Path, classes: int = 3, per_class: dict[str, int] | None = None, size: tuple[int, int] = (48, 40)
) -> Path:
    """An ImageFolder in ImageNet's layout (``root/<split>/<class>/*.JPEG``): real JPEGs whose
    red channel tells the class (learnable), with noise (so that crops differ)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (per_class or {"train": 4, "val": 4}).items():
        for c in range(classes):
            folder = root / split / f"n0000{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
                pixels[..., 0] += np.uint8(90 * c)
                Image.fromarray(pixels).save(folder / f"img{i}.JPEG")
    return root


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started that are still its children (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def command_line(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
