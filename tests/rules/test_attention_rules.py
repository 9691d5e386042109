"""Attention heads from ONNX built by hand: Reshape into heads, Q·Kᵀ, softmax, ·V, merge, project."""

from __future__ import annotations

import numpy as np
from modelkit import group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa
from spa.records import Selection

S, E, H, D = 3, 8, 2, 4


def _attention() -> tuple[list, dict]:
    inits: dict = {"wq": w(E, E, seed=1), "wk": w(E, E, seed=2), "wv": w(E, E, seed=3), "wo": w(E, E, seed=4),
                   "heads": np.array([1, S, H, D], np.int64), "merged": np.array([1, S, E], np.int64)}
    nodes = []
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"]),
                  helper.make_node("Reshape", [f"{p}0", "heads"], [f"{p}1"]),
                  helper.make_node("Transpose", [f"{p}1"], [f"{p}2"], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Transpose", ["k2"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["q2", "kt"], ["s"]),
              helper.make_node("Softmax", ["s"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v2"], ["c"]),
              helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ct", "merged"], ["cm"]),
              helper.make_node("MatMul", ["cm", "wo"], ["y"])]
    return nodes, inits


def _m() -> object:
    nodes, inits = _attention()
    return model(nodes, {"x": [1, S, E]}, {"y": [1, S, E]}, inits)


def test_whole_heads_couple_q_k_v_and_the_output_projection() -> None:
    a = spa.analyze(_m())
    g = group_of(a, "wq", 1)
    assert g is group_of(a, "wk", 1) and g is group_of(a, "wv", 1) and g is group_of(a, "wo", 0)
    assert g.n_units == H and g.prunable
    pruned, plan, _ = prune_checked(_m(), 0.5)  # masked equivalence included
    assert init_shape(pruned, "wq") == [E, D] and init_shape(pruned, "wo") == [D, E]
    targets = {n.output[0]: n.input[1] for n in pruned.graph.node if n.op_type == "Reshape"}
    values = {t.name: list(np.frombuffer(t.raw_data, np.int64)) for t in pruned.graph.initializer
              if t.data_type == 7}
    assert values[targets["q1"]] == [1, S, 1, D] and values[targets["cm"]] == [1, S, D]


def test_head_dims_couple_q_with_k_and_v_alone() -> None:
    a = spa.analyze(_m(), prune_heads="dims")
    qk, v = group_of(a, "wq", 1), group_of(a, "wv", 1)
    assert qk is group_of(a, "wk", 1) and qk is not v
    assert qk.n_units == D and v.n_units == D and v is group_of(a, "wo", 0)
    pruned, _, _ = prune_checked(_m(), 0.5, selection=Selection(prune_heads="dims"))
    assert init_shape(pruned, "wq") == [E, H * D // 2] and init_shape(pruned, "wv") == [E, H * D // 2]


def test_heads_none_blocks() -> None:
    g = group_of(spa.analyze(_m(), prune_heads="none"), "wq", 1)
    assert not g.prunable and any("--prune-heads none" in r for r in g.blocked)
