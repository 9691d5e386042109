"""ModelContext: what is computed from stored tensors only, on graphs deeper than Python's recursion limit."""

from __future__ import annotations

import sys

import numpy as np
from modelkit import model
from onnx import helper

import spa


def test_is_constant_on_a_chain_deeper_than_the_recursion_limit() -> None:
    """A 3000-node chain (a deep network's activations): asking about its end used to recurse once
    per node and raise RecursionError (timm resnetv2_50x1_bit, dynamo export, after pruning)."""
    depth = 3000
    assert depth > sys.getrecursionlimit() // 2
    nodes = [helper.make_node("Relu", [f"t{k}"], [f"t{k + 1}"]) for k in range(depth)]
    nodes[0].input[0] = "x"
    nodes += [helper.make_node("Mul", ["c0", "c0"], ["c1"])] + [
        helper.make_node("Add", [f"c{k}", "c0"], [f"c{k + 1}"]) for k in range(1, depth)]
    nodes.append(helper.make_node("Add", [f"t{depth}", f"c{depth}"], ["y"]))
    m = model(nodes, {"x": [2]}, {"y": [2]}, {"c0": np.ones(2, np.float32)})
    ctx = spa.analyze(m).ctx
    assert not ctx.is_constant(f"t{depth}") and not ctx.is_constant("y")
    assert ctx.is_constant(f"c{depth}")
