"""Packaging promises: a light import, the namespaced subpackages, external data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from modelkit import feeds_for, run

import spa

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


def test_import_spa_does_not_import_torch() -> None:
    code = "import sys, spa, spa.passes, spa.criteria, spa.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_subpackages_are_namespaced() -> None:
    import spa.criteria
    import spa.passes

    assert spa.passes.CleanupPass.__module__.startswith("spa.passes")
    assert "l1" in spa.criteria.CRITERIA


def test_external_data_round_trip(tmp_path: Path) -> None:
    m = spa.load_model(ZOO / "vgg_bn.ts.onnx")
    src = tmp_path / "ext.onnx"
    onnx.save_model(m, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
                    size_threshold=0)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 0
    loaded = spa.load_model(src)
    pruned, _, report = spa.prune(loaded, ratio=0.5)
    assert report.after.params < report.before.params
    out = tmp_path / "out.onnx"
    spa.save_model(pruned, out)
    back = spa.load_model(out)
    feeds = feeds_for(m)
    for a, b in zip(run(pruned, feeds), run(back, feeds)):
        np.testing.assert_array_equal(a, b)


def test_missing_external_data_is_a_clear_error(tmp_path: Path) -> None:
    m = spa.load_model(ZOO / "vgg_bn.ts.onnx")
    src = tmp_path / "ext.onnx"
    onnx.save_model(m, str(src), save_as_external_data=True, location="w.data", size_threshold=0)
    (tmp_path / "w.data").unlink()
    try:
        spa.load_model(src)
    except spa.SpaError as exc:
        assert "external data" in str(exc) or "w.data" in str(exc)
    else:
        raise AssertionError("expected SpaError")


def test_wheel_ships_license_and_types_and_declares_tomli(tmp_path: Path) -> None:
    """What a user installs: the Apache-2.0 LICENSE, ``py.typed`` (PEP 561), tomli on Python 3.10,
    and the errors the API raises importable from ``spa``."""
    import zipfile

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "spa/py.typed" in names
    assert any(n.endswith("LICENSE") and ".dist-info/" in n for n in names)
    assert "Requires-Dist: tomli>=2; python_version < \"3.11\"" in metadata
    assert "Apache-2.0" in metadata
    assert issubclass(spa.RewriteError, spa.SpaError)
