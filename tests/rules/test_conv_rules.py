"""Conv / ConvTranspose rules: plain, grouped, depthwise, 1-D/2-D/3-D."""

from __future__ import annotations

import pytest
from modelkit import bn, conv, group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_plain_conv_chain_prunes_hidden_channels(dims: int) -> None:
    inits: dict = {}
    sp = [6] * dims
    nodes = [conv("x", "c1", 3, 8, inits=inits, dims=dims), helper.make_node("Relu", ["c1"], ["r1"]),
             conv("r1", "y", 8, 4, inits=inits, dims=dims)]
    m = model(nodes, {"x": [1, 3, *sp]}, {"y": [1, 4, *sp]}, inits)
    a = spa.analyze(m)
    g = group_of(a, "c1.w", 0)
    assert g.prunable and g.n_units == 8
    assert {("y.w", 1), ("c1.b", 0), ("r1", 1)} <= set(g.members)
    pruned, plan, _ = prune_checked(m, 0.5)
    assert init_shape(pruned, "c1.w")[0] == 4 and init_shape(pruned, "y.w")[1] == 4


def test_depthwise_couples_input_and_output() -> None:
    inits: dict = {}
    nodes = [conv("x", "c1", 3, 8, inits=inits), bn("c1", "b1", 8, inits),
             conv("b1", "dw", 8, 8, group=8, inits=inits), conv("dw", "y", 8, 4, k=1, inits=inits)]
    m = model(nodes, {"x": [1, 3, 6, 6]}, {"y": [1, 4, 6, 6]}, inits)
    a = spa.analyze(m)
    g = group_of(a, "c1.w", 0)
    assert ("dw.w", 0) in g.members and ("y.w", 1) in g.members and g.n_units == 8
    pruned, _, _ = prune_checked(m, 0.5)
    dw = next(n for n in pruned.graph.node if n.name == "dw")
    assert next(x.i for x in dw.attribute if x.name == "group") == 4
    assert init_shape(pruned, "dw.w") == [4, 1, 3, 3]


def test_grouped_conv_units_are_whole_groups() -> None:
    inits: dict = {}
    nodes = [conv("x", "c1", 3, 16, k=1, inits=inits), conv("c1", "gc", 16, 8, group=4, inits=inits),
             conv("gc", "y", 8, 2, k=1, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    a = spa.analyze(m)
    g = group_of(a, "c1.w", 0)
    assert g.n_units == 4  # one unit per conv group: 4 input + 2 output channels each
    assert ("gc.w", 0) in g.members and ("gc.w", 1) not in g.members
    pruned, _, _ = prune_checked(m, 0.5)
    gc = next(n for n in pruned.graph.node if n.name == "gc")
    assert next(x.i for x in gc.attribute if x.name == "group") == 2
    assert init_shape(pruned, "gc.w") == [4, 4, 3, 3] and init_shape(pruned, "c1.w")[0] == 8


def test_conv_transpose_plain_and_grouped() -> None:
    inits: dict = {}
    inits["ct.w"] = w(8, 6, 2, 2)
    inits["ct.b"] = w(6)
    inits["gt.w"] = w(6, 2, 2, 2)
    nodes = [conv("x", "c1", 3, 8, inits=inits),
             helper.make_node("ConvTranspose", ["c1", "ct.w", "ct.b"], ["ct"], name="ct", strides=[2, 2]),
             helper.make_node("ConvTranspose", ["ct", "gt.w"], ["gt"], name="gt", group=3),
             conv("gt", "y", 6, 2, k=1, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 9, 9]}, inits)
    a = spa.analyze(m)
    assert ("ct.w", 0) in group_of(a, "c1.w", 0).members
    g = group_of(a, "ct.w", 1)
    assert ("gt.w", 0) in g.members and g.n_units == 3
    pruned, _, _ = prune_checked(m, 0.5)
    assert init_shape(pruned, "ct.w")[0] == 4
    gt = next(n for n in pruned.graph.node if n.name == "gt")
    assert next(x.i for x in gt.attribute if x.name == "group") == 2


def test_non_constant_weight_blocks() -> None:
    inits: dict = {}
    nodes = [conv("x", "c1", 3, 4, inits=inits), helper.make_node("Conv", ["c1", "wdyn"], ["y"], name="dyn")]
    m = model(nodes, {"x": [1, 3, 5, 5], "wdyn": [2, 4, 1, 1]}, {"y": [1, 2, 5, 5]}, inits)
    a = spa.analyze(m)
    g = group_of(a, "c1.w", 0)
    assert not g.prunable and any("not a constant" in r for r in g.blocked)
