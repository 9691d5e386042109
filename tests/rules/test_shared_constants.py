"""Equal initializers merged by the TorchScript exporter (one tensor, an Identity per user)
must not couple the layers that read them."""

from __future__ import annotations

import numpy as np
from modelkit import conv, group_of, model, prune_checked
from onnx import helper

import spa


def _deduplicated() -> object:
    inits: dict = {"gamma": np.ones(6, np.float32), "beta": np.zeros(6, np.float32),
                   "mean": np.zeros(6, np.float32), "var": np.ones(6, np.float32)}
    nodes = [conv("x", "a", 3, 6, inits=inits), conv("x", "b", 3, 6, inits=inits)]
    for t in ("a", "b"):
        for p in ("gamma", "beta", "mean", "var"):
            nodes.append(helper.make_node("Identity", [p], [f"{t}.{p}"]))
        nodes.append(helper.make_node("BatchNormalization", [t, *(f"{t}.{p}" for p in ("gamma", "beta", "mean", "var"))],
                                      [f"{t}.bn"]))
        nodes.append(conv(f"{t}.bn", f"{t}.y", 6, 2, inits=inits))
    # A third user reads the shared tensor directly, as the exporter's first user does.
    nodes.append(helper.make_node("Mul", ["gamma", "gamma"], ["g2"]))
    nodes.append(helper.make_node("Add", ["a.y", "b.y"], ["y"]))
    return model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4], "g2": [6]}, inits)


def test_identity_views_do_not_couple_layers() -> None:
    m = _deduplicated()
    a = spa.analyze(m)
    ga, gb = group_of(a, "a.w", 0), group_of(a, "b.w", 0)
    assert ga is not gb and ga.prunable and gb.prunable
    assert ("a.gamma", 0) in ga.members and ("b.gamma", 0) in gb.members
    assert ("gamma", 0) not in ga.members


def test_views_are_materialised_and_replayable() -> None:
    m = _deduplicated()
    pruned, plan, _ = prune_checked(m, 0.5, criterion="random", seed=1)
    names = {s.initializer for s in plan.slices}
    assert {"a.gamma", "b.gamma"} <= names and "gamma" not in names
    inits = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert inits["a.gamma"] == [3] and inits["b.gamma"] == [3] and inits["gamma"] == [6]
    assert not any(n.op_type == "Identity" and n.output[0] in ("a.gamma", "b.gamma") for n in pruned.graph.node)
    replay, _, _ = spa.prune(m, from_plan=plan)
    assert {t.name: list(t.dims) for t in replay.graph.initializer} == inits
