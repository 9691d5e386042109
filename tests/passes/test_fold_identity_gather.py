"""FoldIdentityGatherPass: ``Gather(Reshape(x, [-1]), idx)`` with run-time indices that copy ``x`` in
order (the dynamo exporter's ``as_strided``) becomes ``Identity(x)``, so the channels of ``x`` can be
followed; a gather that reorders is left alone and blocks its group."""

from __future__ import annotations

import numpy as np
import onnx
from modelkit import conv, group_of, model, prune_checked
from onnx import helper

import spa
from spa.passes.fold_identity_gather import FoldIdentityGatherPass


def _as_strided(reverse_channels: bool = False) -> onnx.ModelProto:
    """conv (4 channels, 1x1 map) -> flatten -> Gather with indices n*4 + c built from Shape/Range."""
    inits: dict = {"flat": np.array([-1], np.int64), "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
                   "four": np.array(4, np.int64), "c_start": np.array(3 if reverse_channels else 0, np.int64),
                   "c_end": np.array(-1 if reverse_channels else 4, np.int64),
                   "c_step": np.array(-1 if reverse_channels else 1, np.int64),
                   "ax123": np.array([1, 2, 3], np.int64), "ax023": np.array([0, 2, 3], np.int64)}
    nodes = [conv("x", "a", 3, 4, k=1, inits=inits),
             helper.make_node("Reshape", ["a", "flat"], ["a_flat"], name="flatten"),
             helper.make_node("Shape", ["a"], ["n1"], name="batch", start=0, end=1),
             helper.make_node("Squeeze", ["n1"], ["n"], name="batch_scalar"),
             helper.make_node("Range", ["zero", "n", "one"], ["rn"], name="range_n"),
             helper.make_node("Mul", ["rn", "four"], ["rn4"], name="stride_n"),
             helper.make_node("Unsqueeze", ["rn4", "ax123"], ["in"], name="idx_n"),
             helper.make_node("Range", ["c_start", "c_end", "c_step"], ["rc"], name="range_c"),
             helper.make_node("Unsqueeze", ["rc", "ax023"], ["ic"], name="idx_c"),
             helper.make_node("Add", ["in", "ic"], ["idx"], name="idx"),
             helper.make_node("Gather", ["a_flat", "idx"], ["g"], name="as_strided", axis=0),
             conv("g", "y", 4, 2, k=1, inits=inits)]
    return model(nodes, {"x": ["N", 3, 1, 1]}, {"y": ["N", 2, 1, 1]}, inits)


def test_identity_gather_becomes_identity_once_and_the_group_prunes() -> None:
    m = _as_strided()
    work = onnx.ModelProto()
    work.CopyFrom(m)
    assert FoldIdentityGatherPass()(work).modified
    ops = [n.op_type for n in work.graph.node]
    assert "Gather" not in ops and "Range" not in ops and "Reshape" not in ops and "Identity" in ops
    assert not FoldIdentityGatherPass()(work).modified  # idempotent
    onnx.checker.check_model(work, full_check=True)
    assert group_of(spa.analyze(m), "a.w", 0).prunable  # spa.analyze normalises with the pass
    pruned, _, _ = prune_checked(m, ratio=0.5)  # masked equivalence against the original gather
    assert [t.dims for t in pruned.graph.initializer if t.name == "a.w"] == [[2, 3, 1, 1]]


def test_gather_that_reorders_is_refused() -> None:
    m = _as_strided(reverse_channels=True)
    assert not FoldIdentityGatherPass()(m).modified
    assert "Gather" in [n.op_type for n in m.graph.node]
    g = group_of(spa.analyze(m), "a.w", 0)
    assert not g.prunable and any("Gather 'as_strided'" in r for r in g.blocked), g.blocked
