"""Params and MACs against hand-computed values."""

from __future__ import annotations

import numpy as np
from modelkit import conv, model, w
from onnx import helper

import spa
from spa.metrics import measure


def test_conv_gemm_matmul_convtranspose_macs() -> None:
    inits: dict = {"ct.w": w(4, 2, 2, 2), "fc.w": w(10, 2 * 8 * 8), "mm.w": w(10, 3)}
    nodes = [conv("x", "c1", 3, 8, k=3, inits=inits),                     # 8·4·4 out × 3·3·3
             conv("c1", "dw", 8, 8, k=3, group=4, inits=inits),           # 8·4·4 out × 2·3·3
             conv("dw", "c2", 8, 4, k=1, bias=False, inits=inits),        # 4·4·4 out × 8
             helper.make_node("ConvTranspose", ["c2", "ct.w"], ["ct"], strides=[2, 2]),  # 4·4·4 in × 2·2·2
             helper.make_node("Flatten", ["ct"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.w"], ["g"], transB=1),     # 1·10 × 128
             helper.make_node("MatMul", ["g", "mm.w"], ["y"])]             # 1·3 × 10
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 3]}, inits)
    cost = measure(spa.analyze(m).ctx)
    expected = 8 * 16 * 27 + 8 * 16 * 18 + 4 * 16 * 8 + 4 * 16 * 8 + 10 * 128 + 3 * 10
    assert cost.macs == expected
    assert cost.params == sum(v.size for v in inits.values())


def test_pruning_reduces_macs_as_computed() -> None:
    inits: dict = {}
    nodes = [conv("x", "c1", 3, 8, k=3, inits=inits), conv("c1", "y", 8, 2, k=3, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    _, _, report = spa.prune(m, ratio=0.5)
    assert report.before.macs == 16 * (8 * 27 + 2 * 72)
    assert report.after.macs == 16 * (4 * 27 + 2 * 36)
    assert report.after.params == report.before.params - 4 * 27 - 4 - 2 * 4 * 9
    assert np.isclose(report.after.size_bytes / report.before.size_bytes, 0.5, atol=0.2)
