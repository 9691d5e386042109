"""Element-wise activations and broadcasting arithmetic (residuals, SE scaling, biases)."""

from __future__ import annotations

import numpy as np
import pytest
from modelkit import conv, group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa

ACTIVATIONS = [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}), ("HardSigmoid", {}), ("HardSwish", {}),
    ("Tanh", {}), ("Elu", {}), ("Selu", {}), ("Softplus", {}), ("Erf", {}), ("Gelu", {}), ("Mish", {}),
    ("Identity", {}), ("Softsign", {}), ("Celu", {}), ("Abs", {}), ("Neg", {}),
]


@pytest.mark.parametrize("op,attrs", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_passes_channels(op: str, attrs: dict) -> None:
    inits: dict = {}
    nodes = [conv("x", "c1", 3, 6, inits=inits), helper.make_node(op, ["c1"], ["a"], **attrs),
             conv("a", "y", 6, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits, opset=20)
    g = group_of(spa.analyze(m), "c1.w", 0)
    assert g.prunable and ("y.w", 1) in g.members
    prune_checked(m, 0.5)


def test_clip_dropout_cast_prelu() -> None:
    inits: dict = {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32), "slope": w(6, 1, 1)}
    nodes = [conv("x", "c1", 3, 6, inits=inits), helper.make_node("Clip", ["c1", "lo", "hi"], ["a"]),
             helper.make_node("Dropout", ["a"], ["d"]), helper.make_node("Cast", ["d"], ["ca"], to=1),
             helper.make_node("PRelu", ["ca", "slope"], ["p"]), conv("p", "y", 6, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    g = group_of(spa.analyze(m), "c1.w", 0)
    assert ("slope", 0) in g.members
    pruned, _, _ = prune_checked(m, 0.5)
    assert init_shape(pruned, "slope") == [3, 1, 1]


def test_residual_add_couples_branches() -> None:
    inits: dict = {}
    nodes = [conv("x", "c0", 3, 8, inits=inits), conv("c0", "c1", 8, 4, inits=inits),
             conv("c1", "c2", 4, 8, inits=inits), helper.make_node("Add", ["c0", "c2"], ["s"]),
             conv("s", "y", 8, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    a = spa.analyze(m)
    g = group_of(a, "c0.w", 0)
    assert {("c2.w", 0), ("c1.w", 1), ("y.w", 1)} <= set(g.members)
    assert group_of(a, "c1.w", 0) is not g
    prune_checked(m, 0.5)


def test_se_scaling_and_swish() -> None:
    inits: dict = {"bias": w(1, 8, 1, 1)}
    nodes = [conv("x", "c1", 3, 8, inits=inits), helper.make_node("Sigmoid", ["c1"], ["sg"]),
             helper.make_node("Mul", ["c1", "sg"], ["sw"]),  # SiLU
             helper.make_node("GlobalAveragePool", ["sw"], ["p"]), conv("p", "s1", 8, 2, k=1, inits=inits),
             helper.make_node("Relu", ["s1"], ["s1r"]), conv("s1r", "s2", 2, 8, k=1, inits=inits),
             helper.make_node("Sigmoid", ["s2"], ["gate"]), helper.make_node("Mul", ["sw", "gate"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["sb"]), conv("sb", "y", 8, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    g = group_of(spa.analyze(m), "c1.w", 0)
    assert {("s2.w", 0), ("s1.w", 1), ("bias", 1), ("y.w", 1)} <= set(g.members)
    pruned, _, _ = prune_checked(m, 0.5)
    assert init_shape(pruned, "bias") == [1, 4, 1, 1]


def test_broadcast_scalar_and_size_one_axis_not_coupled() -> None:
    inits: dict = {"k": np.array([2.0], np.float32), "row": w(1, 1, 1, 5)}
    nodes = [conv("x", "c1", 3, 6, inits=inits), helper.make_node("Mul", ["c1", "k"], ["a"]),
             helper.make_node("Add", ["a", "row"], ["b"]), conv("b", "y", 6, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    g = group_of(spa.analyze(m), "c1.w", 0)
    assert all(t not in ("k", "row") for t, _ in g.members)
    prune_checked(m, 0.5)


def test_one_channel_gate_broadcast_over_another_layer_couples_nothing() -> None:
    """FocalNet's ``ctx * gates[:, l:l+1]``: a one-channel slice of one layer scales every channel of
    another. Asked from the slice, the Mul used to link its one channel with all of the other
    layer's channels (indices past the slice's size), merging unrelated units: 2 units where
    timm focalnet_tiny_srf's TorchScript export has 769."""
    inits: dict = {"lo": np.array([0], np.int64), "hi": np.array([1], np.int64), "ax": np.array([1], np.int64)}
    nodes = [conv("x", "g", 3, 4, inits=inits), helper.make_node("Slice", ["g", "lo", "hi", "ax"], ["gate"]),
             conv("x", "c", 3, 6, inits=inits), helper.make_node("Mul", ["c", "gate"], ["m"]),
             helper.make_node("Relu", ["g"], ["gr"]), conv("gr", "yg", 4, 2, inits=inits),
             conv("m", "y", 6, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5], "yg": [1, 2, 5, 5]}, inits)
    a = spa.analyze(m)
    gates, chans = group_of(a, "g.w", 0), group_of(a, "c.w", 0)
    assert gates is not chans and gates.n_units == 4 and chans.n_units == 6
    _, _, report = prune_checked(m, 0.5)  # masked equivalence included
    assert report.groups_pruned == 2
