"""Tests that export with torch (installed by the `torch` extra; skipped without it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from modelkit import assert_masked_equivalent  # noqa: E402

import spa  # noqa: E402

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


def test_torchscript_export_reproduces_committed_file(tmp_path: Path) -> None:
    from models.build_zoo import export_to

    manifest = json.loads((ZOO / "MANIFEST.json").read_text())["files"]
    out = tmp_path / "resnet_basic.ts.onnx"
    export_to("resnet_basic", out, exporter="ts")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == manifest["resnet_basic.ts.onnx"]["sha256"]


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_fresh_export_prunes_with_both_exporters(tmp_path: Path, exporter: str) -> None:
    from models.build_zoo import export_to

    out = tmp_path / f"se.{exporter}.onnx"
    export_to("se_block", out, exporter=exporter)
    original = spa.load_model(out)
    pruned, plan, report = spa.prune(original, ratio=0.4)
    assert report.groups_pruned >= 1 and report.after.macs < report.before.macs
    assert_masked_equivalent(original, pruned, plan)
