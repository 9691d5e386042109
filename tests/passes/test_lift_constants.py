"""LiftConstantsPass: float weights held in Constant nodes become initializers before coupling."""

from __future__ import annotations

import numpy as np
import onnx
from modelkit import conv, group_of, init_shape, model, prune_checked, w
from onnx import helper, numpy_helper

import spa
from spa.passes.lift_constants import LiftConstantsPass
from spa.passes.normalize import normalize


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"{name}_node", value=numpy_helper.from_array(value, name))


def _matmul_b_in_constant() -> onnx.ModelProto:
    """Conv -> Flatten -> MatMul(B held in a Constant) -> Add(bias in a Constant) -> MatMul(B in a Constant)."""
    inits: dict = {}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("Flatten", ["a"], ["f"], axis=1),
             _const("w1", w(6 * 2 * 2, 8)), helper.make_node("MatMul", ["f", "w1"], ["h0"]),
             _const("b1", w(8)), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]),
             _const("w2", w(8, 3)), helper.make_node("MatMul", ["h", "w2"], ["y"])]
    return model(nodes, {"x": ["N", 3, 2, 2]}, {"y": ["N", 3]}, inits)


def test_lifts_float_constants_once() -> None:
    m = _matmul_b_in_constant()
    before = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in m.graph.node if n.op_type == "Constant"}
    assert LiftConstantsPass()(m).modified
    assert not any(n.op_type == "Constant" for n in m.graph.node)
    stored = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for name, value in before.items():
        np.testing.assert_array_equal(stored[name], value)
    onnx.checker.check_model(m, full_check=True)
    assert not LiftConstantsPass()(m).modified  # idempotent


def test_refuses_scalars_integers_outputs_and_subgraphs() -> None:
    then = helper.make_graph([_const("inner", w(4))], "then", [], [helper.make_tensor_value_info("inner", 1, [4])])
    nodes = [_const("scale", np.array([2.0], np.float32)), _const("shape", np.array([1, -1], np.int64)),
             _const("out_c", w(2, 3)), helper.make_node("Mul", ["x", "scale"], ["y0"]),
             helper.make_node("Reshape", ["y0", "shape"], ["y"]),
             helper.make_node("Constant", [], ["flag"], value=numpy_helper.from_array(np.array(True))),
             helper.make_node("If", ["flag"], ["z"], then_branch=then, else_branch=then)]
    m = model(nodes, {"x": [1, 4]}, {"y": [1, 4], "out_c": [2, 3], "z": [4]})
    original = m.SerializeToString()
    assert not LiftConstantsPass()(m).modified
    assert m.SerializeToString() == original


def test_model_without_float_constants_is_unchanged() -> None:
    inits: dict = {"shape": np.array([1, -1], np.int64)}
    nodes = [conv("x", "a", 3, 4, inits=inits), _const("s2", np.array([1, -1], np.int64)),
             helper.make_node("Reshape", ["a", "s2"], ["y"])]
    m = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 16]}, inits)
    original = m.SerializeToString()
    assert normalize(m).SerializeToString() == original


def test_weight_in_constant_prunes_like_an_initializer() -> None:
    m = _matmul_b_in_constant()
    a = spa.analyze(m)
    hidden = group_of(a, "w1", 1)
    assert hidden.prunable and ("b1", 0) in hidden.members and ("w2", 0) in hidden.members
    assert group_of(a, "a.w", 0).prunable and ("w1", 0) in group_of(a, "a.w", 0).members
    pruned, plan, _ = prune_checked(m, 0.5)  # masked equivalence against the model with Constant nodes
    assert init_shape(pruned, "w1") == [3 * 2 * 2, 4] and init_shape(pruned, "w2") == [4, 3]
    assert {s.initializer for s in plan.slices} >= {"w1", "b1", "w2"}
    assert any(n.op_type == "Constant" for n in m.graph.node)  # the caller's model is not touched
    v = spa.verify_models(m, pruned, plan)
    assert v.passed and v.mode == "masked-equivalence"

