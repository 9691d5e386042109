"""QDQ models (QuantizeLinear/DequantizeLinear, spa/analysis/rules/quant.py), as onnxruntime's own
``quantize_static`` writes them from a zoo model: int8 codes sliced with their per-channel scales
and zero points, masked equivalence, parameters counted in codes, and blocked quantization refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import group_of, model, run, w
from onnx import helper, numpy_helper

import spa
from spa.check.verify import mask_model, verify
from spa.records import Selection

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"


def _quantize(model: Path, out: Path, quant_format: str, per_channel: bool, activation: str = "QUInt8",
              reduce_range: bool = False) -> Path:
    """``model`` quantized by onnxruntime's ``quantize_static`` (int8 weights), calibrated on four
    seeded random batches."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantize_static(str(model), str(out), Reader(), quant_format=getattr(QuantFormat, quant_format),
                    per_channel=per_channel, weight_type=QuantType.QInt8,
                    activation_type=getattr(QuantType, activation), reduce_range=reduce_range)
    return out


def _quantized(tmp_path: Path, per_channel: bool) -> Path:
    out = tmp_path / f"qdq{'_pc' if per_channel else ''}.onnx"
    return _quantize(ZOO / "defaults" / "resnet_basic.ts.onnx", out, "QDQ", per_channel)


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_static_output_prunes_exactly(tmp_path: Path, per_channel: bool, run_spa) -> None:
    path = _quantized(tmp_path, per_channel)
    original = spa.load_model(path)
    pruned, plan, report = spa.prune(original, ratio=0.4, criterion="l1", selection=Selection(round_to=1))
    onnx.checker.check_model(pruned, full_check=True)
    assert report.groups_pruned >= 5
    assert report.before.params == 42_986  # the float model's weights, counted as int8 codes
    assert report.after.params < 0.6 * report.before.params
    v = verify(original, pruned, plan, batch=2)
    assert v.mode == "masked-equivalence" and v.passed, v.outputs  # exact, at the graph's own arithmetic
    feeds = {"input": np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    ref, got = run(mask_model(original, plan), feeds)[0], run(pruned, feeds)[0]  # fused integer kernels
    step = float(numpy_helper.to_array(next(t for t in original.graph.initializer if t.name == "logits_scale")))
    assert np.abs(ref - got).max() <= 4 * step
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for node in pruned.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].ndim == 4:
            codes, scale = inits[node.input[0]], inits[node.input[1]]
            assert codes.dtype == np.int8
            assert scale.size == (codes.shape[0] if per_channel else 1)
    code, _, err = run_spa("prune", path, "--ratio", "0.4", "-o", tmp_path / "small.onnx")  # default criterion
    assert code == 0, err


def test_blocked_quantization_is_refused_with_reason() -> None:
    inits = {"wq": np.ones((8, 4, 3, 3), np.int8), "ws": np.full((8, 2, 3, 3), 0.1, np.float32),
             "c2": w(4, 8, 3, 3)}
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws"], ["wf"], axis=1, block_size=2),
             helper.make_node("Conv", ["x", "wf"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "c2"], ["y"], pads=[1, 1, 1, 1])]
    m = model(nodes, {"x": [1, 4, 6, 6]}, {"y": [1, 4, 6, 6]}, inits, opset=21)
    g = group_of(spa.analyze(m), "c2", 1)
    assert g.prunable  # axis 0 is not the blocked axis: codes and scales are sliced along it
    pruned, plan, _ = spa.prune(m, ratio=0.5, criterion="l1")
    shapes = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert shapes["wq"] == [4, 4, 3, 3] and shapes["ws"] == [4, 2, 3, 3]
    assert verify(m, pruned, plan).passed
    m.graph.node[0].attribute[0].i = 0  # now axis 0, the output channels, is the blocked axis
    m2 = model(list(m.graph.node), {"x": [1, 4, 6, 6]}, {"y": [1, 4, 6, 6]},
               {**inits, "ws": np.full((4, 4, 3, 3), 0.1, np.float32)}, opset=21)
    g2 = group_of(spa.analyze(m2), "c2", 1)
    assert not g2.prunable and any("block_size" in r for r in g2.blocked)


@pytest.mark.parametrize("activation,reduce_range,exact", [("QInt8", False, True), ("QUInt8", True, True),
                                                           ("QUInt8", False, False)])
def test_qoperator_model_prunes(tmp_path: Path, activation: str, reduce_range: bool, exact: bool) -> None:
    """QLinearConv / QGemm / QLinearAdd / QLinearGlobalAveragePool (quantize_static, QOperator form,
    per-channel, depthwise convs): codes, per-channel scales and int32 biases sliced, ``group``
    rewritten. int8 x int8 and reduce_range kernels are exact; uint8 x int8 ones saturate on x86,
    so verification reports the difference instead of judging it."""
    path = _quantize(ZOO / "defaults" / "mobilenetv2.ts.onnx", tmp_path / "qop.onnx", "QOperator", per_channel=True,
                     activation=activation, reduce_range=reduce_range)
    original = spa.load_model(path)
    assert {"QLinearConv", "QGemm", "QLinearAdd"} <= {n.op_type for n in original.graph.node}
    pruned, plan, report = spa.prune(original, ratio=0.4, criterion="l1", selection=Selection(round_to=1))
    onnx.checker.check_model(pruned, full_check=True)
    assert report.groups_pruned >= 6 and report.after.params < 0.7 * report.before.params
    float_macs = spa.prune(ZOO / "defaults" / "mobilenetv2.ts.onnx", ratio=0.0)[2].before.macs
    assert report.before.macs == float_macs and report.after.macs < 0.7 * float_macs
    groups = [a.i for n in pruned.graph.node if n.op_type == "QLinearConv" for a in n.attribute if a.name == "group"]
    assert max(groups) > 1  # depthwise convs keep group == channels
    v = verify(original, pruned, plan, batch=2)
    assert v.passed and v.mode == ("masked-equivalence" if exact else "masked-approx"), v.summary()
    if exact:
        assert max(o.max_abs for o in v.outputs) == 0.0
