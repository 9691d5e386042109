"""A Softmax over a channel axis blocks the group with a reason naming the op and the tensor
(skl2onnx and Keras classifiers end in one; the zoo tests check every reason names both)."""

from __future__ import annotations

from modelkit import group_of, model, w
from onnx import helper

import spa


def test_softmax_block_names_op_and_tensor() -> None:
    inits: dict = {"fc1.w": w(8, 6), "fc1.b": w(6), "fc2.w": w(6, 4)}
    nodes = [helper.make_node("MatMul", ["x", "fc1.w"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "fc1.b"], ["logits"], name="bias"),
             helper.make_node("Softmax", ["logits"], ["p"], name="probs", axis=1),
             helper.make_node("MatMul", ["p", "fc2.w"], ["y"], name="fc2")]
    a = spa.analyze(model(nodes, {"x": ["N", 8]}, {"y": ["N", 4]}, inits))
    g = group_of(a, "fc1.w", 1)
    assert not g.prunable
    assert any("Softmax 'probs'" in r and "axis 1 of 'logits'" in r for r in g.blocked), g.blocked
