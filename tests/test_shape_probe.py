"""ShapeProbe reads intermediate tensors of a model whose large weights are fed as inputs."""

from __future__ import annotations

from modelkit import model, w
from onnx import helper

from spa.model.runtime import random_inputs
from spa.model.shapes import ShapeProbe


def test_probe_reads_a_conv_output_that_feeds_an_add() -> None:
    """onnxruntime 1.31 at its full optimisation level (NCHWc layout) lost the output 'c' of a Conv
    whose weight is a graph input when an Add of another such Conv follows: the probe of timm's
    coatnet_nano_rw_224 (dynamo, pruned) failed and its MACs after pruning came out 0.18G, not 1.33G."""
    inits = {"cw": w(64, 32, 1, 1), "cb": w(64), "pw": w(32, 3, 1, 1)}  # cw: over 1024 elements, fed as zeros
    nodes = [helper.make_node("Conv", ["x", "pw"], ["p"]),
             helper.make_node("AveragePool", ["p"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["ap", "cw", "cb"], ["c"]),
             helper.make_node("Relu", ["ap"], ["r"]), helper.make_node("Conv", ["r", "cw"], ["c3"]),
             helper.make_node("Add", ["c3", "c"], ["y"])]
    m = model(nodes, {"x": ["N", 3, 8, 8]}, {"y": ["N", 64, 4, 4]}, inits)
    probe = ShapeProbe(m, ["c"])
    (c,) = probe.run(["c"], random_inputs(m, seed=0, shapes={"x": [2, 3, 8, 8]}))
    assert c.shape == (2, 64, 4, 4)
