"""Shared fixtures: the committed model zoo and helpers that run the real ``spa`` CLI.

:func:`run_spa` runs :func:`spa.cli.app.main` in the test process (a fresh interpreter per call
costs about two seconds of imports, times a few hundred calls); :func:`run_spa_subprocess` runs
``python -m spa`` for the few tests whose point is the process itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TextIO

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import modelkit` (tiny-model builders)
ZOO = ROOT / "models" / "zoo"

PathArg = str | os.PathLike[str]


class SpaRun(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _default_warning_filters() -> None:
    """The warning filters of a fresh interpreter without ``-W`` or ``PYTHONWARNINGS`` (what a
    subprocess run of the CLI had), whatever pytest or an earlier test installed."""
    warnings.resetwarnings()
    for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


def _print_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings go to the (captured) stderr, as in a process of its own, not to pytest's recorder."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _process_state(cwd: PathArg | None) -> Iterator[None]:
    """Run the body as if in a process of its own: in ``cwd``, with default warning filters and
    no logging handlers; afterwards the working directory, environment, umask, logging, warning
    filters and numpy error settings are what they were before."""
    before_cwd, before_env, before_err = os.getcwd(), dict(os.environ), np.geterr()
    mask = os.umask(0)
    os.umask(mask)
    root = logging.getLogger()
    handlers, level, disabled = root.handlers[:], root.level, logging.root.manager.disable
    root.handlers.clear()  # basicConfig(force=True) in the CLI would otherwise close pytest's handlers
    os.environ.pop("PYTHONWARNINGS", None)
    os.environ.setdefault("COLUMNS", "80")  # argparse's help width, as with a pipe for stdout
    try:
        with warnings.catch_warnings():
            _default_warning_filters()
            warnings.showwarning = _print_warning
            if cwd is not None:
                os.chdir(cwd)
            yield
    finally:
        os.chdir(before_cwd)
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.disable(disabled)
        os.umask(mask)
        np.seterr(**before_err)
        if dict(os.environ) != before_env:
            os.environ.clear()
            os.environ.update(before_env)


def _exit_status(code: object) -> int:
    """The exit status of a process that raised ``SystemExit(code)`` (a message is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_spa(*args: PathArg, cwd: PathArg | None = None, timeout: float = 120) -> SpaRun:
    """Run ``spa ARGS`` in this process (:func:`spa.cli.app.main`), in ``cwd``; returns
    ``(returncode, stdout, stderr)`` as :func:`run_spa_subprocess` would. An exception that escapes
    ``main`` ends like an uncaught one in a process: its traceback on stderr and status 1.
    ``timeout`` is accepted for the subprocess helper's signature and not enforced."""
    from spa.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with _process_state(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([os.fspath(a) for a in args])
        except SystemExit as exc:
            code = _exit_status(exc.code)
        except Exception:  # noqa: BLE001 - reported like an uncaught exception in the process
            traceback.print_exc()
            code = 1
    return SpaRun(code, out.getvalue(), err.getvalue())


def run_spa_subprocess(*args: PathArg, cwd: PathArg | None = None, timeout: float = 120) -> SpaRun:
    """Run ``python -m spa ARGS`` in a subprocess; returns ``(returncode, stdout, stderr)``. For the
    tests whose point is the process: the module entry point, exit status, umask, environment. ROOT
    leads PYTHONPATH: run elsewhere than ROOT, ``-m spa`` would import whichever spa is installed."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "spa", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
    )
    return SpaRun(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def zoo() -> Path:
    """The folder of committed small ONNX models."""
    assert ZOO.is_dir(), f"model zoo missing: {ZOO}"
    return ZOO


@pytest.fixture(name="run_spa", scope="session")
def run_spa_fixture() -> Callable[..., SpaRun]:
    """The :func:`run_spa` helper (in-process), as a fixture."""
    return run_spa


@pytest.fixture(name="run_spa_subprocess", scope="session")
def run_spa_subprocess_fixture() -> Callable[..., SpaRun]:
    """The :func:`run_spa_subprocess` helper, as a fixture."""
    return run_spa_subprocess


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """One torch intra-op thread: on a shared 2-core machine, more threads make torch many times
    slower. Modules that train or differentiate use it with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
