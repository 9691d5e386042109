"""LayerNormalization over a pruned axis: blocked by default, approximate when opted in."""

from __future__ import annotations

from modelkit import group_of, model, w
from onnx import helper

import spa
from spa.records import Selection


def _mlp_with_layernorm():
    inits = {"w1": w(6, 8), "g": w(8), "b": w(8), "w2": w(8, 3)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "w2"], ["y"])]
    return model(nodes, {"x": [2, 5, 6]}, {"y": [2, 5, 3]}, inits)


def test_layernorm_group_is_blocked_with_opt_in_reason() -> None:
    g = group_of(spa.analyze(_mlp_with_layernorm()), "w1", 1)
    assert {("g", 0), ("b", 0), ("w2", 0)} <= set(g.members)
    assert not g.prunable and any("--prune-norm-axes" in r for r in g.blocked)


def test_layernorm_opt_in_prunes_and_reports_drift() -> None:
    m = _mlp_with_layernorm()
    pruned, plan, report = spa.prune(m, ratio=0.5, verify_result=True, selection=Selection(prune_norm_axes=True))
    assert plan.inexact and report.groups_pruned == 1
    assert {s.initializer for s in plan.slices} == {"w1", "g", "b", "w2"}
    assert report.verification is not None and report.verification.mode == "drift"
    replay, _, _ = spa.prune(m, from_plan=plan)
    assert [list(t.dims) for t in replay.graph.initializer] == [list(t.dims) for t in pruned.graph.initializer]
