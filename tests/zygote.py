"""A pre-imported interpreter that starts the entry points for the tests, one forked process each.

``python experiments/run.py ...`` spends about 4 of a tiny run's 9 seconds importing torch,
torchvision (which imports torch._dynamo, needed anyway by the run's ``torch.export``), pandas,
scipy, matplotlib and seaborn. This process imports those third-party packages once; for each
command it forks a child that becomes ``python <script> <args>`` exactly as a fresh interpreter
would run it: its own process (its pid, exit status, signals and files), the working directory,
the environment, ``sys.argv``, ``sys.path[0]`` set to the script's folder, ``PYTHONPATH``'s
folders after it, stdout and stderr to files, and the script executed as ``__main__``. Nothing of
the project (nasbench, methods, analysis, experiments) is imported here, so every command imports
the project's modules itself, in its own order, as a user's process does.

Protocol (one JSON object per line): the parent writes ``{"argv", "cwd", "env", "out", "err"}``;
this process answers ``{"pid"}`` when the child started and ``{"status"}`` (as
``subprocess.Popen.returncode``: negative for a signal) when it ended.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import tempfile
import threading
import traceback

PRELOAD = ("torch", "torchvision", "torch._dynamo", "torch.export", "hydra", "omegaconf", "pandas", "scipy.stats")
PRELOAD_PLOTS = ("matplotlib", "seaborn")


def become(request: dict) -> None:
    """In the forked child: turn into ``python argv[0] argv[1:]`` and never return."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # TMPDIR is read again
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["out"]), (2, request["err"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    if os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    script = os.path.abspath(request["argv"][0])
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.path.dirname(script), *extra, *BASE_PATH]
    sys.argv = [request["argv"][0], *request["argv"][1:]]
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch

        torch.set_num_threads(int(threads))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:  # sys.exit("message"): printed, status 1, as the interpreter does
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # an uncaught exception: its traceback from the script on, status 1
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
        code = 1
    try:  # the interpreter's exit: join the threads (and run threading's exit hooks), then atexit
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            become(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    for name in PRELOAD:
        __import__(name)
    os.environ.setdefault("MPLBACKEND", "Agg")  # no display: what matplotlib picks anyway
    for name in PRELOAD_PLOTS:
        __import__(name)
    BASE_PATH = sys.path[1:]  # the interpreter's own folders, without this script's
    serve()
