"""GatherND: trailing data axes pass through (a relative-position bias table indexed by the dynamo
exporter, with heads on its last axis); indexed axes and index-derived output axes block."""

from __future__ import annotations

import numpy as np
from modelkit import group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa


def _bias_table_model() -> tuple[list, dict[str, np.ndarray]]:
    """h = x @ W (4 'heads'); h + table[idx] (GatherND, k = 1); @ W2."""
    inits = {"W": w(8, 4), "table": w(9, 4), "idx": np.array([[0], [3], [8], [2], [2], [5]], np.int64),
             "W2": w(4, 3)}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
             helper.make_node("GatherND", ["table", "idx"], ["bias"], name="bias_gather"),
             helper.make_node("Add", ["h", "bias"], ["s"], name="add_bias"),
             helper.make_node("MatMul", ["s", "W2"], ["y"], name="out")]
    return nodes, inits


def test_gathernd_couples_the_trailing_axis_and_prunes_exactly() -> None:
    nodes, inits = _bias_table_model()
    m = model(nodes, {"x": ["N", 6, 8]}, {"y": ["N", 6, 3]}, inits)
    g = group_of(spa.analyze(m), "W", 1)
    assert g.prunable and ("table", 1) in g.members and ("bias", 1) in g.members
    pruned, _, _ = prune_checked(m, ratio=0.5)  # masked equivalence through the gathered bias
    assert init_shape(pruned, "table") == [9, 2] and init_shape(pruned, "W2") == [2, 3]


def test_gathernd_refuses_an_indexed_channel_axis() -> None:
    """Channels on the indexed axis (here after a Transpose) block, naming the op and tensor."""
    inits = {"W": w(8, 4), "idx": np.array([[0], [2]], np.int64), "W2": w(5, 3)}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
             helper.make_node("Transpose", ["h"], ["t"], name="tr", perm=[1, 0]),
             helper.make_node("GatherND", ["t", "idx"], ["g"], name="rows"),
             helper.make_node("MatMul", ["g", "W2"], ["y"], name="out")]
    m = model(nodes, {"x": [5, 8]}, {"y": [2, 3]}, inits)
    g = group_of(spa.analyze(m), "W", 1)
    assert not g.prunable
    assert any("GatherND 'rows'" in r and "axis 0 of 't'" in r for r in g.blocked), g.blocked
