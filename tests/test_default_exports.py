"""The command line's defaults on models exported with the exporters' defaults.

Most users export with ``torch.onnx.export``'s defaults: TorchScript folds BatchNorm into the
convolutions and shares equal biases as ``Identity`` views (``onnx::Conv_197``), dynamo runs its
ONNX optimizer and stores the weights as external data. ``spa prune MODEL --ratio 0.4`` (criterion
``obspa``, ``--round-to auto``) must prune such a torchvision ResNet-18 at 224×224: exit 0, a
model that passes the full checker and runs in onnxruntime, a plan that ``spa verify`` accepts,
and the drift reported. The zoo's own default exports are covered by ``docs/coverage.md``
(``tests/test_coverage.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from spa.model.runtime import make_session

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def resnet18_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    from benchmarks.coverage_common import define_torchvision_ops

    define_torchvision_ops()
    torchvision = pytest.importorskip("torchvision")
    d = tmp_path_factory.mktemp("resnet18")
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    x = (torch.randn(1, 3, 224, 224),)
    torch.onnx.export(m, x, str(d / "resnet18.ts.onnx"), dynamo=False, opset_version=17, input_names=["input"])
    torch.onnx.export(m, x, str(d / "resnet18.dynamo.onnx"), dynamo=True, input_names=["input"])
    return {"ts": d / "resnet18.ts.onnx", "dynamo": d / "resnet18.dynamo.onnx"}


def test_default_exports_are_what_users_get(resnet18_exports: dict[str, Path]) -> None:
    ts = onnx.load(str(resnet18_exports["ts"]))
    ops = {n.op_type for n in ts.graph.node}
    assert "BatchNormalization" not in ops and "Identity" in ops  # folded, biases shared as views
    assert (resnet18_exports["dynamo"].parent / "resnet18.dynamo.onnx.data").is_file()  # external weights


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_cli_defaults_prune_torchvision_resnet18(run_spa, resnet18_exports: dict[str, Path], exporter: str) -> None:
    src = resnet18_exports[exporter]
    d = src.parent
    out, plan, report = d / f"{exporter}.small.onnx", d / f"{exporter}.plan.json", d / f"{exporter}.report.json"
    code, stdout, err = run_spa("prune", src, "--ratio", "0.4", "-o", out, "--plan", plan, "--report", report,
                                timeout=600)
    assert code == 0, err
    assert "Traceback" not in err
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    data = json.loads(report.read_text())
    assert data["after"]["params"] < 0.9 * data["before"]["params"]
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ref = make_session(onnx.load(str(src))).run(None, {"input": x})[0]
    got = make_session(pruned).run(None, {"input": x})[0]
    assert got.shape == ref.shape == (1, 1000) and np.isfinite(got).all()
    assert json.loads(plan.read_text())["compensated"] is True
    code, stdout, err = run_spa("verify", src, out, "--plan", plan, timeout=300)
    assert code == 0, err
    assert "drift" in stdout
