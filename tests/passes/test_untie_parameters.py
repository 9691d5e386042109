"""UntieParametersPass: every parameter-position use of a shared tensor reads its own view."""

from __future__ import annotations

import numpy as np
import onnx
from modelkit import model, run, w
from onnx import helper

from spa.passes.normalize import share_unsliced_uses
from spa.passes.untie_parameters import UntieParametersPass, parse_use_name, use_name


def _shared() -> onnx.ModelProto:
    """``bias`` is read by two Adds (parameters), ``fc`` by two MatMuls (weights: a deliberate tie)."""
    inits = {"bias": w(4), "fc": w(4, 4), "one": np.array([1.0], np.float32), "idx": np.array([0, 1], np.int64)}
    nodes = [helper.make_node("MatMul", ["x", "fc"], ["h0"]), helper.make_node("Add", ["h0", "bias"], ["h1"]),
             helper.make_node("MatMul", ["h1", "fc"], ["h2"]), helper.make_node("Add", ["h2", "bias"], ["h3"]),
             helper.make_node("Mul", ["h3", "one"], ["h4"]), helper.make_node("Mul", ["h4", "one"], ["h5"]),
             helper.make_node("Gather", ["h5", "idx"], ["y"], axis=1), helper.make_node("Gather", ["h5", "idx"], ["z"], axis=1)]
    return model(nodes, {"x": [2, 4]}, {"y": [2, 2], "z": [2, 2]}, inits)


def test_each_parameter_use_gets_a_view_once() -> None:
    m = _shared()
    x = {"x": w(2, 4)}
    want = run(m, x)
    assert UntieParametersPass()(m).modified
    adds = [n for n in m.graph.node if n.op_type == "Add"]
    assert [n.input[1] for n in adds] == [use_name("bias", [0]), use_name("bias", [1])]
    views = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Identity"}
    assert views == {"bias__spa_use0": "bias", "bias__spa_use1": "bias"}
    onnx.checker.check_model(m, full_check=True)
    for a, b in zip(want, run(m, x)):
        np.testing.assert_array_equal(a, b)
    assert not UntieParametersPass()(m).modified  # idempotent
    assert share_unsliced_uses(m) and not any(n.op_type == "Identity" for n in m.graph.node)  # and back


def test_refuses_weights_scalars_integers_and_interface() -> None:
    m = _shared()
    UntieParametersPass()(m)
    assert [n.input[1] for n in m.graph.node if n.op_type == "MatMul"] == ["fc", "fc"]  # a tied weight stays tied
    assert [n.input[1] for n in m.graph.node if n.op_type == "Mul"] == ["one", "one"]  # one element
    assert [n.input[1] for n in m.graph.node if n.op_type == "Gather"] == ["idx", "idx"]  # integers
    g = model([helper.make_node("Add", ["x", "b"], ["y"]), helper.make_node("Add", ["y", "b"], ["z"])],
              {"x": [4], "b": [4]}, {"z": [4]})  # a graph input is the interface, not a parameter
    assert not UntieParametersPass()(g).modified


def test_use_names_round_trip() -> None:
    assert parse_use_name(use_name("w.0", [3, 1])) == ("w.0", [1, 3])
    assert parse_use_name("w.0__spa_bias") is None
