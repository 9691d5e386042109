"""mypy over the whole installed package, ``spa.passes`` and ``spa.criteria`` included: 0 errors.

The two folders install inside ``spa`` (``package-dir`` in pyproject.toml), so mypy is run on a
temporary tree that links them in place; the settings are ``[tool.mypy]`` in pyproject.toml.
Run by hand: ``python tests/test_types.py`` (prints mypy's report).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_mypy() -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "spa"
        pkg.mkdir()
        for entry in (ROOT / "spa").iterdir():
            if entry.name not in ("__pycache__", "passes", "criteria"):
                (pkg / entry.name).symlink_to(entry)
        (pkg / "passes").symlink_to(ROOT / "passes")
        (pkg / "criteria").symlink_to(ROOT / "criteria")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
             "--cache-dir", str(Path(tmp) / ".mypy_cache"), "-p", "spa"],
            cwd=tmp, capture_output=True, text=True, env=env, timeout=900,
        )


def test_mypy_reports_no_errors() -> None:
    pytest.importorskip("mypy")
    res = run_mypy()
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


if __name__ == "__main__":
    r = run_mypy()
    print(r.stdout + r.stderr)
    sys.exit(r.returncode)
