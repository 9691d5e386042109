"""Zoo models from TensorFlow/Keras (tf2onnx), JAX/Flax (jax2onnx), scikit-learn (skl2onnx) and
PaddlePaddle (paddle2onnx), pruned end to end.

The files are committed (models/zoo/frameworks/, rebuilt by models/frameworks/build_*.py in
their own virtualenvs), so this needs none of the frameworks. Each model is pruned with l1 at
ratios 0.3 and 0.6 and checked: full ONNX check, onnxruntime run, output shapes unchanged,
fewer parameters and MACs, masked equivalence, and the groups that matter actually pruned.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import assert_masked_equivalent, feeds_for, run

import spa

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo" / "frameworks"
MANIFEST = json.loads((ZOO / "MANIFEST.json").read_text())["files"]
MODELS = sorted(p.name for p in ZOO.glob("*.onnx"))

# Prunable groups per model: every hidden channel space, i.e. every group except the one that
# reaches the model's output (or a Softmax over the classes).
EXPECTED_PRUNABLE = {
    "keras_cnn.tf2onnx.onnx": 9,
    "keras_cnn.tf2onnx-noopt.onnx": 9,
    "keras_vgg.tf2onnx.onnx": 5,
    "keras_mlp.tf2onnx.onnx": 3,
    "flax_cnn.jax2onnx.onnx": 6,
    "flax_vgg.jax2onnx.onnx": 4,
    "flax_mlp.jax2onnx.onnx": 2,
    "sklearn_mlp.skl2onnx.onnx": 2,
    "paddle_cnn.paddle2onnx.onnx": 6,
}


def test_every_framework_is_in_the_zoo() -> None:
    assert set(MODELS) == set(EXPECTED_PRUNABLE)
    exporters = {MANIFEST[m]["exporter"].split()[0] for m in MODELS}
    assert exporters == {"tf2onnx", "jax2onnx", "skl2onnx", "paddle2onnx"}


@pytest.mark.parametrize("name", MODELS)
def test_manifest_matches_file(name: str) -> None:
    entry = MANIFEST[name]
    data = (ZOO / name).read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest(), "rebuild with models/frameworks/build_*.py"
    assert entry["file_size"] == len(data) < 1 << 20
    assert entry["exporter_version"] and entry["framework_version"]
    m = onnx.load_from_string(data)
    onnx.checker.check_model(m, full_check=True)
    assert sorted({n.op_type for n in m.graph.node}) == entry["op_types"]


@pytest.mark.parametrize("name", MODELS)
def test_blocked_groups_name_op_and_tensor(name: str) -> None:
    a = spa.analyze(ZOO / name)
    assert len(a.prunable) == EXPECTED_PRUNABLE[name], [g.blocked for g in a.groups if g.blocked]
    blocked = [g for g in a.groups if g.blocked]
    assert len(blocked) == 1  # the classifier output (or the Softmax over the classes)
    for reason in blocked[0].blocked:
        assert "model output '" in reason or ("Softmax '" in reason and " of '" in reason), reason


@pytest.mark.parametrize("ratio", [0.3, 0.6])
@pytest.mark.parametrize("name", MODELS)
def test_prune_framework_model(name: str, ratio: float) -> None:
    original = spa.load_model(ZOO / name)
    pruned, plan, report = spa.prune(original, ratio=ratio, criterion="l1")
    onnx.checker.check_model(pruned, full_check=True)
    feeds = feeds_for(original)
    ref, got = run(original, feeds), run(pruned, feeds)
    assert [r.shape for r in ref] == [g.shape for g in got]
    assert report.groups_pruned == EXPECTED_PRUNABLE[name]
    assert report.after.params < report.before.params
    assert report.after.macs < report.before.macs
    assert plan.slices and all(0 < len(s.keep) < s.size for s in plan.slices)
    assert_masked_equivalent(original, pruned, plan)
    _assert_layers_pruned(original, plan)


def _assert_layers_pruned(original: onnx.ModelProto, plan: spa.Plan) -> None:
    """Every conv's output channels and every dense layer's units but the classifier's are in a
    pruned group: despite the NHWC Transposes of tf2onnx and jax2onnx, every convolution is pruned.
    (In a concat group one branch may keep all its channels; the group as a whole loses units.)"""
    status = {m: g for g in plan.groups for m in g.members}
    layers = [n for n in original.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert len(layers) >= 3
    for n in layers[:-1]:
        g = status.get(f"{n.output[0]}:1")
        assert g is not None and g.status == "pruned" and g.kept_units < g.units, (n.name, g)
    last = status[f"{layers[-1].output[0]}:1"]
    assert last.status.startswith("blocked") and last.kept_units == last.units


def test_sklearn_mlp_still_classifies_digits() -> None:
    """The skl2onnx model is trained on load_digits: pruning a little keeps it a classifier."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x[1400:] / 16.0).astype(np.float32), y[1400:]
    original = spa.load_model(ZOO / "sklearn_mlp.skl2onnx.onnx")
    accuracy = float(np.mean(run(original, {"input": x})[0] == y))
    assert accuracy == pytest.approx(MANIFEST["sklearn_mlp.skl2onnx.onnx"]["heldout_accuracy"], abs=1e-3)
    pruned, _, _ = spa.prune(original, ratio=0.3, criterion="l1")
    label, probs = run(pruned, {"input": x})
    assert probs.shape == (len(y), 10) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert float(np.mean(label == y)) > 0.5
