"""Shared fixtures: the committed model zoo and a helper that runs the real ``spa`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import modelkit` (tiny-model builders)
ZOO = ROOT / "models" / "zoo"


class SpaRun(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_spa(*args: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None, timeout: float = 120) -> SpaRun:
    """Run ``python -m spa ARGS`` in a subprocess; returns ``(returncode, stdout, stderr)``."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
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
    """The :func:`run_spa` helper, as a fixture."""
    return run_spa


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """One torch intra-op thread: on a shared 2-core machine, more threads make torch many times
    slower. Modules that train or differentiate use it with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
