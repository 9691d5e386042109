"""Split attention (SKNet, ResNeSt): branch outputs stacked as (B, 2, C, H, W), attention logits
(B, 2·C) reshaped to (B, 2, C, 1, 1) and softmaxed over the 2 branches. A unit is channel c of
every branch; the softmaxed branch axis is never the one pruned."""

from __future__ import annotations

import numpy as np
import onnx
from modelkit import conv, group_of, init_shape, model, prune_checked
from onnx import helper

import spa

C, R = 6, 4


def _selective_kernel() -> onnx.ModelProto:
    inits: dict = {"ax1": np.array([1], np.int64),
                   "split": np.array([0, 2, C, 1, 1], np.int64)}
    nodes = [conv("x", "p0", 3, C, k=3, inits=inits), conv("x", "p1", 3, C, k=1, inits=inits),
             helper.make_node("Unsqueeze", ["p0", "ax1"], ["u0"]), helper.make_node("Unsqueeze", ["p1", "ax1"], ["u1"]),
             helper.make_node("Concat", ["u0", "u1"], ["stack"], axis=1),  # (B, 2, C, H, W)
             helper.make_node("ReduceSum", ["stack", "ax1"], ["sum"], keepdims=0),
             helper.make_node("ReduceMean", ["sum"], ["pool"], axes=[2, 3], keepdims=1),
             conv("pool", "red", C, R, k=1, inits=inits), helper.make_node("Relu", ["red"], ["rr"]),
             conv("rr", "sel", R, 2 * C, k=1, inits=inits),
             helper.make_node("Reshape", ["sel", "split"], ["logits"], name="to_branches"),
             helper.make_node("Softmax", ["logits"], ["attn"], axis=1, name="over_branches"),
             helper.make_node("Mul", ["stack", "attn"], ["weighted"]),
             helper.make_node("ReduceSum", ["weighted", "ax1"], ["out"], keepdims=0),
             conv("out", "y", C, 2, inits=inits)]
    return model(nodes, {"x": ["N", 3, 5, 5]}, {"y": ["N", 2, 5, 5]}, inits)


def test_a_unit_is_one_channel_of_every_branch() -> None:
    a = spa.analyze(_selective_kernel())
    g = group_of(a, "p0.w", 0)
    assert g.prunable and g.n_units == C  # was 1 unit, blocked by the Softmax over the branches
    assert g is group_of(a, "p1.w", 0) and g is group_of(a, "sel.w", 0) and g is group_of(a, "y.w", 1)
    pruned, _, report = prune_checked(_selective_kernel(), 0.5)  # masked equivalence included
    assert init_shape(pruned, "sel.w") == [C, R // 2, 1, 1] and init_shape(pruned, "p0.w") == [C // 2, 3, 3, 3]
    assert report.groups_pruned == 2  # the branches' channels and the reduction
