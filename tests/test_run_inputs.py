"""Bad run inputs are one line and leave no run folder; summary.json records provenance;
``threads=`` is applied; alpha is written per epoch; ``tensorboard=true`` writes event files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_entry


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name in (".hydra", "run.log"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("seed=abc",), "seed=abc: give a whole number"),
        (("+estimator.foo=1",), "estimator dsnas takes no foo"),
        (("estimator=gumbel_st", "+estimator.tua_start=3"), "estimator gumbel_st takes no tua_start"),
        (("estimator=broken",), "estimator broken: cannot import its module 'no_such_module_here'"),
        (("threads=0",), "threads=0: give a whole number of at least 1"),
        (("data.root=/no/such/folder",), "/no/such/folder"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_folder(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    conf = tmp_path / "plugin" / "estimator"
    conf.mkdir(parents=True)
    (conf / "broken.yaml").write_text("name: broken\nmodule: no_such_module_here\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'plugin'}]"
    proc = run_entry("run.py", "scale=tiny", searchpath, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert message in proc.stderr
    assert leftovers(tmp_path) == [], "a refused run left its folder behind"


def test_a_refusal_in_an_existing_folder_keeps_it(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    proc = run_entry("run.py", "seed=1.5", f"hydra.run.dir={mine}", cwd=tmp_path)
    assert proc.returncode == 2 and "seed=1.5" in proc.stderr
    assert (mine / "notes.txt").read_text() == "my notes"


def test_provenance_threads_alpha_and_tensorboard(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_entry(
        "run.py", "scale=tiny", "threads=1", "tensorboard=true", "progress=false", f"hydra.run.dir={run_dir}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["threads"] == 1, "threads=1 was not applied"
    assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"]) and isinstance(prov["git_dirty"], bool)
    assert prov["torch"] and prov["cpu"] and prov["host"] and prov["gpu"] is None
    assert summary["config"]["method"]["name"] == "dsnas" and "threads" not in summary["config"]
    search = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in search if r["phase"] == "search"]
    probs = search[-1]["alpha_probs"]
    assert len(probs) == 4 and all(abs(sum(row) - 1) < 1e-3 for row in probs)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"search/loss", "search/alpha_entropy", "search/lr", "finetune/train_acc"} <= tags
    assert events.Scalars("search/loss")[0].value == pytest.approx(search[0]["loss"], rel=1e-5)
