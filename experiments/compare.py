"""Compare gradient estimators under one method pipeline, budget and set of seeds, in one command.

    .venv/bin/python experiments/compare.py estimator=mine,dsnas,gumbel_softmax space=nb201 scale=tiny
    PYTHONPATH=my_nas .venv/bin/python experiments/compare.py estimator=mine,dsnas seed=0,1 \\
        'hydra.searchpath=[file://my_nas/conf]'

It runs, as a user would, one after the other:
1. ``run.py -m method=<method> estimator=<each> seed=<each>`` with every other override given
   (space, scale, data, budget, method.* and estimator.* keys, device...): one run record per
   (estimator, seed) under ``<out>/runs/``;
2. ``bench.py configs=[<method>/<each estimator>]`` on the same space, scale and data: each
   estimator's search step against the stand-alone child, into ``<out>/bench.csv``
   (``bench=false`` skips it; estimator.* overrides do not reach the bench, which builds each
   estimator from its config file);
3. ``analysis/report.py <out>``: one report whose rows are (method, estimator) and whose figures
   put the estimators side by side, into ``<out>/report/``.

Keys of its own: ``estimator=a,b,...`` (at least one; plug-ins found through
``hydra.searchpath`` and ``PYTHONPATH``, docs/estimators.md), ``method=`` (one; default dsnas),
``seed=`` (default 0; a list for several), ``out=`` (default
``outputs/compare/<method>_<space>_<date_time>``; must not exist yet), ``bench=true|false``.
Every estimator is checked against the method before anything runs: a combination the method
cannot use is refused in one line, with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cli
from methods.base import METHODS
from methods.estimators.base import build_estimator
from nasbench.errors import UserError, unknown_choice

HERE = Path(__file__).resolve().parent
#: overrides that also shape the bench (the space it builds, its batch, device and precision)
BENCH_KEYS = ("space", "scale", "data", "budget", "device", "precision", "channels_last", "hydra.searchpath")


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """compare's own keys, and the overrides passed on to run.py (and, where they apply, bench.py)."""
    own, rest = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-"):
            raise UserError(f"{arg!r}: compare takes key=value overrides only (see --help)")
        if key in ("estimator", "method", "seed", "out", "bench"):
            own[key] = value
        else:
            rest.append(arg)
    if not own.get("estimator"):
        raise UserError("give the estimators to compare: estimator=mine,dsnas,... (at least one)")
    if "," in own.get("method", ""):
        raise UserError(f"method={own['method']}: compare runs one method pipeline; give one method")
    if own.get("bench", "true").lower() not in ("true", "false"):
        raise UserError(f"bench={own['bench']}: give true or false")
    return own, rest


def check_combinations(method: str, estimators: list[str], argv: list[str]) -> None:
    """Refuse, before anything runs, estimators the method's pipeline cannot use."""
    from bench_step import method_config

    if method not in METHODS:
        raise unknown_choice("method", method, METHODS.names())
    method_cfg, _ = method_config(method)
    refused = []
    for name in estimators:
        try:
            METHODS.get(method).check_estimator(method_cfg, build_estimator(cli.group_config("estimator", name, argv)))
        except UserError as err:
            refused.append(f"{name} ({err})")
    if refused:
        raise UserError(f"method={method} cannot compare {'; '.join(refused)}")


def step(title: str, command: list[str]) -> int:
    print(f"compare: {title}\n  $ {' '.join(command)}", file=sys.stderr, flush=True)
    return subprocess.run(command).returncode


def compare(argv: list[str]) -> int:
    own, rest = parse(argv)
    method = own.get("method", "dsnas")
    estimators = [e.strip() for e in own["estimator"].split(",") if e.strip()]
    if len(set(estimators)) != len(estimators):
        raise UserError(f"estimator={own['estimator']}: an estimator is listed twice")
    cli.check_group_choices([f"estimator={','.join(estimators)}", *rest])
    check_combinations(method, estimators, rest)
    space = next((a.split("=", 1)[1] for a in rest if a.startswith("space=")), "shufflenet")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(own.get("out") or f"outputs/compare/{method}_{space}_{stamp}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"out={out} already holds files; choose another folder (compare never writes over one)")
    python = sys.executable
    runs = [
        python,
        str(HERE / "run.py"),
        "-m",
        f"method={method}",
        f"estimator={','.join(estimators)}",
        f"seed={own.get('seed', '0')}",
        *rest,
        f"hydra.sweep.dir={out / 'runs'}",
    ]
    failed = []
    seeds = own.get("seed", "0").split(",")
    if step(f"[1/3] {len(estimators)} estimators x {len(seeds)} seeds under method={method}", runs) != 0:
        failed.append("runs")
    if own.get("bench", "true").lower() == "true":
        passed = [a for a in rest if a.split("=", 1)[0].split(".")[0] in BENCH_KEYS or a.startswith("hydra.searchpath")]
        configs = ",".join(f"{method}/{e}" for e in estimators)
        bench = [python, str(HERE / "bench.py"), f"configs=[{configs}]", f"out={out / 'bench.csv'}", "loader=false"]
        if step("[2/3] each estimator's search step against the child", [*bench, *passed]) != 0:
            failed.append("bench")
    report = [python, str(HERE.parent / "analysis" / "report.py"), str(out)]
    if step("[3/3] the report", report) != 0:
        failed.append("report")
    if failed:
        print(f"error: compare: {', '.join(failed)} failed (above); what finished is in {out}", file=sys.stderr)
        return 1
    print(f"compare: done -> {out / 'report' / 'report.md'}")
    return 0


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    with cli.user_errors():
        sys.exit(compare(sys.argv[1:]))
