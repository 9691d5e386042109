"""Einsum from ONNX built by hand: MaxViT-style attention (scores and context as Einsum), an
Einsum with a weight, ellipsis and implicit outputs, and the refused diagonal."""

from __future__ import annotations

import numpy as np
import onnx
from modelkit import group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa
from spa.analysis.rules.einsum import parse
from spa.records import Selection

S, E, H, D = 3, 8, 2, 4


def _einsum_attention(scores: str = "B H I D, B H J D -> B H I J", context: str = "bhij,bhjd->bhid") -> onnx.ModelProto:
    inits: dict = {"wq": w(E, E, seed=1), "wk": w(E, E, seed=2), "wv": w(E, E, seed=3), "wo": w(E, E, seed=4),
                   "heads": np.array([1, S, H, D], np.int64), "merged": np.array([1, S, E], np.int64)}
    nodes = []
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"]),
                  helper.make_node("Reshape", [f"{p}0", "heads"], [f"{p}1"]),
                  helper.make_node("Transpose", [f"{p}1"], [f"{p}2"], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Einsum", ["q2", "k2"], ["s"], equation=scores),
              helper.make_node("Softmax", ["s"], ["p"], axis=-1),
              helper.make_node("Einsum", ["p", "v2"], ["c"], equation=context),
              helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ct", "merged"], ["cm"]),
              helper.make_node("MatMul", ["cm", "wo"], ["y"])]
    return model(nodes, {"x": [1, S, E]}, {"y": [1, S, E]}, inits, opset=17)


def test_einsum_attention_prunes_whole_heads() -> None:
    a = spa.analyze(_einsum_attention())
    g = group_of(a, "wq", 1)
    assert g is group_of(a, "wk", 1) and g is group_of(a, "wv", 1) and g is group_of(a, "wo", 0)
    assert g.prunable and g.n_units == H
    pruned, _, _ = prune_checked(_einsum_attention(), 0.5)  # masked equivalence included
    assert init_shape(pruned, "wq") == [E, D] and init_shape(pruned, "wo") == [D, E]


def test_einsum_attention_head_dims() -> None:
    a = spa.analyze(_einsum_attention(), prune_heads="dims")
    qk, v = group_of(a, "wq", 1), group_of(a, "wv", 1)
    assert qk is group_of(a, "wk", 1) and qk is not v and v is group_of(a, "wo", 0)
    pruned, _, _ = prune_checked(_einsum_attention(), 0.5, selection=Selection(prune_heads="dims"))
    assert init_shape(pruned, "wq") == [E, H * D // 2] and init_shape(pruned, "wv") == [E, H * D // 2]


def test_einsum_with_a_weight_creates_and_consumes_channels() -> None:
    """``...d,de`` (implicit output ``...e``) is a dense layer: its e features are a group with
    the next layer's input, and its d input is the previous layer's output."""
    inits = {"w1": w(5, 6, seed=5), "w2": w(6, 4, seed=6), "w3": w(4, 3, seed=7)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Einsum", ["r1", "w2"], ["h2"], equation="...d,de"),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["y"])]
    m = model(nodes, {"x": ["N", 2, 5]}, {"y": ["N", 2, 3]}, inits)
    a = spa.analyze(m)
    assert group_of(a, "w1", 1) is group_of(a, "w2", 0) and group_of(a, "w1", 1).prunable
    assert group_of(a, "w2", 1) is group_of(a, "w3", 0) and group_of(a, "w2", 1).prunable
    pruned, _, report = prune_checked(m, 0.5)
    assert report.groups_pruned == 2 and init_shape(pruned, "w2") == [3, 2]


def test_parse_expands_ellipsis_and_implicit_outputs() -> None:
    assert parse("...d,de", [3, 2]) == ([["…1", "…0", "d"], ["d", "e"]], ["…1", "…0", "e"])
    assert parse("B G H I D, B G H J D -> B G H I J", [5, 5])[1] == list("BGHIJ")  # type: ignore[index]
    assert parse("ij,jk->ik", [3, 2]) is None  # the first term names 2 axes of a rank-3 tensor


def test_diagonal_is_blocked_with_the_op_named() -> None:
    inits = {"w1": w(4, 4, seed=8)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Unsqueeze", ["h", "ax"], ["h2"]),
             helper.make_node("Mul", ["h2", "h2"], ["sq"]),
             helper.make_node("Einsum", ["sq"], ["y"], equation="bii->bi", name="diag")]
    m = model(nodes, {"x": [4, 4]}, {"y": [1, 4]}, {**inits, "ax": np.array([0], np.int64)})
    g = group_of(spa.analyze(m), "w1", 1)
    assert not g.prunable and any("Einsum 'diag'" in r and "repeats label" in r for r in g.blocked)
