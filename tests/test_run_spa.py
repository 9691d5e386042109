"""The in-process CLI runner of conftest: it must behave like a process of its own and leave the
test process as it found it (cwd, environment, umask, logging, warning filters)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _state() -> tuple[Any, ...]:
    mask = os.umask(0)
    os.umask(mask)
    root = logging.getLogger()
    return os.getcwd(), dict(os.environ), mask, root.handlers[:], root.level, warnings.filters[:]


def test_in_process_runs_capture_output_and_restore_state(run_spa: Callable[..., Any], zoo: Path,
                                                           tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes((zoo / "resnet_basic.ts.onnx").read_bytes())
    before = _state()
    res = run_spa("groups", "m.onnx", "-vv", cwd=tmp_path)  # a relative path: found through cwd
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1].startswith("PASSED |")
    assert "DEBUG spa" in res.stderr and "PASSED |" not in res.stderr  # logs on stderr, reports on stdout
    assert _state() == before
    res = run_spa("groups", "--no-such-flag", cwd=tmp_path)  # argparse's SystemExit becomes the exit status
    assert res.returncode == 2 and "usage error" in res.stderr and res.stdout == ""
    res = run_spa("--version")
    assert res.returncode == 0 and res.stdout.startswith("spa ")
    assert _state() == before
