"""Gemm (transA/transB) and MatMul with a constant weight."""

from __future__ import annotations

import pytest
from modelkit import group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_hidden_units(trans_b: int) -> None:
    w1 = w(10, 6) if trans_b else w(6, 10)
    w2 = w(3, 10) if trans_b else w(10, 3)
    inits = {"w1": w1, "b1": w(10), "w2": w2, "b2": w(3)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=trans_b),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=trans_b)]
    m = model(nodes, {"x": ["N", 6]}, {"y": ["N", 3]}, inits)
    g = group_of(spa.analyze(m), "b1", 0)
    assert g.prunable and g.n_units == 10
    pruned, _, _ = prune_checked(m, 0.3)
    assert init_shape(pruned, "b1") == [7]
    assert init_shape(pruned, "w2")[1 if trans_b else 0] == 7


def test_matmul_constant_weight_with_leading_axes() -> None:
    inits = {"w1": w(6, 12), "b1": w(12), "w2": w(12, 5)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Gelu", ["hb"], ["g"], domain=""),
             helper.make_node("MatMul", ["g", "w2"], ["y"])]
    m = model(nodes, {"x": [2, 7, 6]}, {"y": [2, 7, 5]}, inits, opset=20)
    g = group_of(spa.analyze(m), "w1", 1)
    assert {("b1", 0), ("w2", 0)} <= set(g.members) and g.prunable
    pruned, _, _ = prune_checked(m, 0.5)
    assert init_shape(pruned, "w1") == [6, 6] and init_shape(pruned, "w2") == [6, 5]


def test_matmul_of_two_activations_couples_the_contraction_axis() -> None:
    """``h @ z`` with z a run-time input: h's features are z's rows, so the group reaches the
    model input z and is blocked there (not at the MatMul, which attention needs to follow)."""
    inits = {"w1": w(6, 4)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "z"], ["y"])]
    m = model(nodes, {"x": [3, 6], "z": [4, 2]}, {"y": [3, 2]}, inits)
    g = group_of(spa.analyze(m), "w1", 1)
    assert ("z", 0) in g.members and not g.prunable and any("model input 'z'" in r for r in g.blocked)
