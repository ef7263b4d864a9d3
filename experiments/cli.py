"""What every entry point shares: import path, one-line errors, group-choice checks."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(__file__).resolve().parent / "conf"
if str(ROOT) not in sys.path:  # `python experiments/run.py` works from a checkout without install
    sys.path.insert(0, str(ROOT))

from nasbench.checkpoint import Interrupted  # noqa: E402
from nasbench.errors import UserError, unknown_choice  # noqa: E402

GROUP_KINDS = {
    "method": "method",
    "space": "space",
    "estimator": "estimator",
    "data": "data set",
    "scale": "scale",
    "budget": "budget",
}


def search_dirs(argv: Sequence[str]) -> list[Path]:
    """The shipped config folder plus every ``file://`` folder of ``hydra.searchpath=[...]``: a
    user's own estimator or method config can live outside the repository."""
    dirs = [CONF_DIR]
    for arg in argv:
        if arg.lstrip("+").startswith("hydra.searchpath="):
            for entry in arg.split("=", 1)[1].strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if entry.startswith("file://"):
                    dirs.append(Path(entry[len("file://") :]))
    return dirs


def group_options(group: str, argv: Sequence[str] = ()) -> list[str]:
    return sorted({p.stem for d in search_dirs(argv) for p in (d / group).glob("*.yaml")})


def group_config(group: str, name: str, argv: Sequence[str] = ()) -> dict:
    """The resolved config file ``<group>/<name>.yaml`` from the first search folder that has it
    (a plug-in's folder through ``hydra.searchpath``); an unknown name is a one-line error."""
    from omegaconf import OmegaConf

    for folder in search_dirs(argv):
        path = folder / group / f"{name}.yaml"
        if path.is_file():
            return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    raise unknown_choice(GROUP_KINDS.get(group, group), name, group_options(group, argv))


def _sweep_values(value: str) -> list[str]:
    """The plain values of an override ("a" or the multirun list "a,b"); others are left to Hydra."""
    if any(c in value for c in "()[]{}$*"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def check_group_choices(argv: Sequence[str], groups: Sequence[str] = tuple(GROUP_KINDS)) -> None:
    """Fail in one line on an unknown config-group option, before Hydra prints its own page."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key in groups:
            allowed = group_options(key, argv)
            for v in _sweep_values(value):
                if v not in allowed:
                    raise unknown_choice(GROUP_KINDS[key], v, allowed)


def fail(message: str, status: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`UserError` into ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except UserError as err:
        fail(str(err))
    except Interrupted as stop:  # a signal, after a checkpoint: not an error of the user's
        print(str(stop), file=sys.stderr)
        sys.exit(stop.status)
    except KeyboardInterrupt:
        fail("interrupted", status=130)


def entry(main: Callable[[], None], groups: Sequence[str] = tuple(GROUP_KINDS)) -> None:
    """Run a Hydra ``main`` after checking the command line's group choices."""
    with user_errors():
        check_group_choices(sys.argv[1:], groups)
    main()
