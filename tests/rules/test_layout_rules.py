"""Concat/Split/Slice offsets, Flatten/Reshape blocks, Transpose, Pad, Resize, pooling, reductions."""

from __future__ import annotations

import numpy as np
from modelkit import bn, conv, group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa


def _i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def test_concat_offsets_and_split_back() -> None:
    inits: dict = {"sizes": _i64(4, 6)}
    nodes = [conv("x", "a", 3, 4, inits=inits), conv("x", "b", 3, 6, inits=inits),
             helper.make_node("Concat", ["a", "b"], ["cat"], axis=1), bn("cat", "n", 10, inits),
             helper.make_node("Split", ["n", "sizes"], ["s0", "s1"], axis=1),
             helper.make_node("Add", ["s1", "b"], ["t"]),
             conv("s0", "y0", 4, 2, inits=inits), conv("t", "y1", 6, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y0": [1, 2, 5, 5], "y1": [1, 2, 5, 5]}, inits)
    a = spa.analyze(m)
    g = group_of(a, "a.w", 0)
    assert g is group_of(a, "b.w", 0) and g.n_units == 10
    pruned, plan, _ = prune_checked(m, 0.5)
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    sizes = next(t for t in pruned.graph.initializer if t.name == split.input[1])
    kept_a = init_shape(pruned, "a.w")[0]
    assert list(np.frombuffer(sizes.raw_data, np.int64)) == [kept_a, init_shape(pruned, "b.w")[0]]


def test_split_attribute_before_opset13() -> None:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 8, inits=inits),
             helper.make_node("Split", ["a"], ["s0", "s1"], axis=1, split=[3, 5]),
             conv("s0", "y0", 3, 2, inits=inits), conv("s1", "y1", 5, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y0": [1, 2, 5, 5], "y1": [1, 2, 5, 5]}, inits, opset=11)
    pruned, _, _ = prune_checked(m, 0.5)
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    assert sum(next(a.ints for a in split.attribute if a.name == "split")) == init_shape(pruned, "a.w")[0]


def test_slice_on_channel_axis_rewrites_bounds() -> None:
    inits: dict = {"st": _i64(2), "en": _i64(7), "ax": _i64(1)}
    nodes = [conv("x", "a", 3, 10, inits=inits), helper.make_node("Slice", ["a", "st", "en", "ax"], ["s"]),
             conv("s", "y", 5, 2, inits=inits), conv("a", "z", 10, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5], "z": [1, 2, 5, 5]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert ("y.w", 1) in g.members and g.n_units == 10
    prune_checked(m, 0.5)


def test_flatten_maps_channel_to_feature_block() -> None:
    inits: dict = {"fc.w": w(4, 6 * 3 * 3), "fc.b": w(4)}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("Flatten", ["a"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1)]
    m = model(nodes, {"x": ["N", 3, 3, 3]}, {"y": ["N", 4]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert g.n_units == 6 and ("fc.w", 1) in g.members
    assert list(np.bincount(g.unit_of[("fc.w", 1)])) == [9] * 6
    pruned, _, _ = prune_checked(m, 0.5)
    assert init_shape(pruned, "fc.w") == [4, 27]


def test_reshape_with_constant_target_is_rewritten() -> None:
    inits: dict = {"shape": _i64(1, 6 * 4), "fc.w": w(6 * 4, 3)}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("Reshape", ["a", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "fc.w"], ["y"])]
    m = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 3]}, inits)
    pruned, _, _ = prune_checked(m, 0.5)
    rs = next(n for n in pruned.graph.node if n.op_type == "Reshape")
    target = next(t for t in pruned.graph.initializer if t.name == rs.input[1])
    assert list(np.frombuffer(target.raw_data, np.int64)) == [1, 12]


def test_nhwc_transpose_then_flatten() -> None:
    inits: dict = {"fc.w": w(2 * 2 * 5, 3)}
    nodes = [conv("x", "a", 3, 5, inits=inits), helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Flatten", ["t"], ["f"]), helper.make_node("MatMul", ["f", "fc.w"], ["y"])]
    m = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 3]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert g.prunable and ("fc.w", 0) in g.members
    prune_checked(m, 0.4)


def test_reshape_splitting_channel_axis_follows_the_outer_axis() -> None:
    """6 channels split into (2, 3): a unit is one outer index (a "head" of 3 channels)."""
    inits: dict = {"shape": _i64(1, 2, 3, 4)}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("Reshape", ["a", "shape"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    m = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 3, 4]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert g.n_units == 2 and ("r", 1) in g.members and ("r", 2) not in g.members
    assert not g.prunable and any("model output 'y' axis 1" in r for r in g.blocked)
    g = group_of(spa.analyze(m, prune_heads="none"), "a.w", 0)
    assert any("--prune-heads none" in r for r in g.blocked)


def test_pool_pad_resize_reduce_keep_channels() -> None:
    inits: dict = {"pads": _i64(0, 0, 1, 1, 0, 0, 1, 1), "scales": np.array([1, 1, 2, 2], np.float32),
                   "axes": _i64(2, 3)}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("MaxPool", ["a"], ["mp"], kernel_shape=[2, 2]),
             helper.make_node("Pad", ["mp", "pads"], ["pd"]),
             helper.make_node("Resize", ["pd", "", "scales"], ["rs"], mode="nearest"),
             helper.make_node("AveragePool", ["rs"], ["ap"], kernel_shape=[2, 2]),
             conv("ap", "b", 6, 4, inits=inits),
             helper.make_node("ReduceMean", ["b", "axes"], ["rm"], keepdims=1),
             conv("rm", "y", 4, 2, k=1, inits=inits)]
    m = model(nodes, {"x": [1, 3, 6, 6]}, {"y": [1, 2, 1, 1]}, inits, opset=18)
    a = spa.analyze(m)
    assert group_of(a, "a.w", 0).prunable and group_of(a, "b.w", 0).prunable
    prune_checked(m, 0.5)


def test_reduce_over_channels_and_softmax_over_channels_block() -> None:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("ReduceMean", ["a"], ["y"], axes=[1]),
             conv("x", "b", 3, 4, inits=inits), helper.make_node("Softmax", ["b"], ["sm"], axis=1),
             conv("sm", "z", 4, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 1, 4, 4], "z": [1, 2, 4, 4]}, inits, opset=13)
    a = spa.analyze(m)
    assert any("averages over pruned axis 1" in r for r in group_of(a, "a.w", 0).blocked)  # inexact: opt-in
    assert any("normalises over axis 1" in r for r in group_of(a, "b.w", 0).blocked)


def test_unknown_op_blocks_only_its_groups() -> None:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("LpNormalization", ["a"], ["n"], axis=1),
             conv("n", "b", 6, 4, inits=inits), helper.make_node("Relu", ["b"], ["r"]),
             conv("r", "y", 4, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    a = spa.analyze(m)
    blocked = group_of(a, "a.w", 0)
    assert any("LpNormalization" in r and "no coupling rule" in r for r in blocked.blocked)
    assert group_of(a, "b.w", 0).prunable
    pruned, plan, _ = prune_checked(m, 0.5)
    assert {s.initializer for s in plan.slices} >= {"b.w", "y.w"} and "a.w" not in {s.initializer for s in plan.slices}


def test_model_input_and_output_axes_are_blocked() -> None:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("Add", ["a", "skip"], ["y"])]
    m = model(nodes, {"x": [1, 3, 4, 4], "skip": [1, 6, 4, 4]}, {"y": [1, 6, 4, 4]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert any("model input 'skip'" in r for r in g.blocked)
    assert any("model output 'y'" in r for r in g.blocked)
