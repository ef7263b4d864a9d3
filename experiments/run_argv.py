"""What run.py does with its command line before Hydra starts (README, "Interruptions and
resume", "One run on several devices: torchrun"): remember which run folders already existed,
refuse a folder that holds a complete run, find the run ``resume=true`` continues, and give the
secondary ranks of a torchrun job a temporary Hydra folder."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

import cli
from nasbench import distributed
from nasbench.checkpoint import SIDECAR, config_differences, read_sidecar, run_config
from nasbench.errors import UserError
from nasbench.records import RunRecord

TORCHRUN_SWEEP = "a torchrun job runs one configuration: launch sweeps (-m) without torchrun"

#: run folders that existed before this process started (an explicit hydra.run.dir, the jobs of an
#: existing hydra.sweep.dir): a refused run never removes those, whatever they hold
EXISTING_DIRS: set[Path] = set()


def discard_refused(record: RunRecord, log: str = "run.log") -> None:
    """After a refusal: remove the run folder Hydra made for it, unless it existed before this
    process (``EXISTING_DIRS``) or holds more than Hydra's files and the job log ``log``."""
    if record.dir.resolve() not in EXISTING_DIRS:
        record.discard_if_fresh(log)


def note_existing_dirs(argv: list[str]) -> None:
    for arg in argv:
        key, _, value = arg.partition("=")
        path = Path(value.strip("'\""))
        if key == "hydra.run.dir" and path.exists():
            EXISTING_DIRS.add(path.resolve())
        elif key == "hydra.sweep.dir" and path.is_dir():
            EXISTING_DIRS.update(p.resolve() for p in path.iterdir() if p.is_dir())


def refuse_complete_run_dir(argv: list[str]) -> None:
    """Check an explicit ``hydra.run.dir`` before Hydra writes its .hydra/ files into it."""
    if "-m" in argv or "--multirun" in argv or "overwrite=true" in argv or not distributed.launched_env().is_main:
        return
    for arg in argv:
        if arg.startswith("hydra.run.dir="):
            RunRecord.peek(arg.split("=", 1)[1]).guard(overwrite=False)


def secondary_rank_argv(argv: list[str]) -> list[str]:
    """Under torchrun, ranks other than 0 keep their Hydra folder in a temporary directory,
    removed at exit: rank 0 alone writes the run record."""
    env = distributed.launched_env()
    if env.enabled and ("-m" in argv or "--multirun" in argv):
        raise UserError(TORCHRUN_SWEEP)
    if env.is_main:
        return argv
    tmp = tempfile.mkdtemp(prefix=f"nasbench-rank{env.rank}-")
    atexit.register(shutil.rmtree, tmp, True)
    kept = [a for a in argv if not a.startswith(("hydra.run.dir=", "hydra.output_subdir=", "progress="))]
    quiet = ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled", "progress=false"]
    return [*kept, f"hydra.run.dir={tmp}", "hydra.output_subdir=null", *quiet]


def resume_argv(argv: list[str]) -> list[str]:
    """``resume=true`` without ``hydra.run.dir``: the newest folder beside where this command
    would write (``outputs/<method>_<space>_<data>/``) whose checkpoint has the same configuration."""
    if "resume=true" not in argv or any(a.startswith("hydra.run.dir=") for a in argv):
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise UserError("resume=true in a sweep needs the sweep's folder: give hydra.sweep.dir=<the sweep to resume>")
    if not distributed.launched_env().is_main:
        return argv
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base=None):
        cfg = compose("config", overrides=argv, return_hydra_config=True)
    parent = Path(str(cfg.hydra.run.dir)).parent
    with open_dict(cfg):
        del cfg["hydra"]
    wanted = run_config(OmegaConf.to_container(cfg, resolve=True))
    folders = sorted(parent.glob(f"*/{SIDECAR}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for sidecar in folders:
        saved = read_sidecar(sidecar.parent)
        if saved is not None and not config_differences(saved.get("config", {}), wanted):
            print(f"resuming {sidecar.parent} ({saved.get('where')})", file=sys.stderr)
            return [*argv, f"hydra.run.dir={sidecar.parent}"]
    raise UserError(
        f"resume=true: no interrupted run of this configuration under {parent}/; run without resume=true to"
        " start one, or name its folder with hydra.run.dir=..."
    )


def prepare_argv(argv: list[str]) -> list[str]:
    """The command line Hydra gets, after the checks above (in this order)."""
    cli.check_group_choices(argv)  # before composing the configuration for resume=true
    note_existing_dirs(argv)
    argv = resume_argv(argv)
    refuse_complete_run_dir(argv)
    return secondary_rank_argv(argv)
