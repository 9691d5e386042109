"""Equal initializers merged by the TorchScript exporter (one tensor, an Identity per user)
must not couple the layers that read them."""

from __future__ import annotations

import numpy as np
from modelkit import conv, group_of, model, prune_checked
from onnx import helper

import spa
from spa.records import Scoring, Selection


def _deduplicated() -> object:
    inits: dict = {"gamma": np.ones(6, np.float32), "beta": np.zeros(6, np.float32),
                   "mean": np.zeros(6, np.float32), "var": np.ones(6, np.float32)}
    nodes = [conv("x", "a", 3, 6, inits=inits), conv("x", "b", 3, 6, inits=inits)]
    for t in ("a", "b"):
        for p in ("gamma", "beta", "mean", "var"):
            nodes.append(helper.make_node("Identity", [p], [f"{t}.{p}"]))
        nodes.append(helper.make_node("BatchNormalization", [t, *(f"{t}.{p}" for p in ("gamma", "beta", "mean",
                     "var"))],
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
    pruned, plan, _ = prune_checked(m, 0.5, criterion="random", scoring=Scoring(seed=1))
    names = {s.initializer for s in plan.slices}
    assert {"a.gamma", "b.gamma"} <= names and "gamma" not in names
    inits = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert inits["a.gamma"] == [3] and inits["b.gamma"] == [3] and inits["gamma"] == [6]
    assert not any(n.op_type == "Identity" and n.output[0] in ("a.gamma", "b.gamma") for n in pruned.graph.node)
    replay, _, _ = spa.prune(m, from_plan=plan)
    assert {t.name: list(t.dims) for t in replay.graph.initializer} == inits


# ---- one initializer read directly by several layers (tf2onnx merges equal constants) -------

PARAMS = ("gamma", "beta", "mean", "var")


def _merged(shared_conv: bool = False) -> object:
    """Two branches whose BatchNorms (and a per-channel Mul) read the same initializers, as
    tf2onnx's optimizer leaves an untrained network; ``shared_conv``: one module applied twice."""
    inits: dict = {"gamma": np.ones(6, np.float32), "beta": np.zeros(6, np.float32),
                   "mean": np.zeros(6, np.float32), "var": np.ones(6, np.float32),
                   "s": np.full((1, 6, 1, 1), 0.5, np.float32)}
    nodes = [conv("x", "a", 3, 6, inits=inits)]
    nodes.append(helper.make_node("Conv", ["x2", "a.w", "a.b"], ["b"], pads=[1, 1, 1, 1]) if shared_conv
                 else conv("x2", "b", 3, 6, inits=inits))
    for t in ("a", "b"):
        nodes += [helper.make_node("BatchNormalization", [t, *PARAMS], [f"{t}.bn"]),
                  helper.make_node("Mul", [f"{t}.bn", "s"], [f"{t}.s"]), conv(f"{t}.s", f"{t}.y", 6, 2, inits=inits)]
    nodes.append(helper.make_node("Add", ["a.y", "b.y"], ["y"]))
    return model(nodes, {"x": [1, 3, 4, 4], "x2": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)


def test_parameters_read_by_several_layers_do_not_couple_them() -> None:
    a = spa.analyze(_merged())
    ga, gb = group_of(a, "a.w", 0), group_of(a, "b.w", 0)
    assert ga is not gb and ga.prunable and gb.prunable and ga.n_units == gb.n_units == 6
    assert not any(t in PARAMS for g in (ga, gb) for t, _ in g.members)  # each reads its own view
    m = _merged()
    pruned, plan, _ = prune_checked(m, 0.5, criterion="random", scoring=Scoring(seed=3))
    keep = {s.initializer: s.keep for s in plan.slices}
    assert keep["a.w"] != keep["b.w"]  # the branches now lose different channels
    inits = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert not set(PARAMS) & set(inits)  # every use was sliced: the shared tensor is gone
    assert sorted(n for n in inits if n.startswith("gamma")) == ["gamma__spa_use0", "gamma__spa_use1"]
    assert not any(n.op_type == "Identity" for n in pruned.graph.node)
    replay, _, _ = spa.prune(m, from_plan=plan)
    assert {t.name: list(t.dims) for t in replay.graph.initializer} == inits
    assert spa.verify_models(m, pruned, plan).passed  # the masked original unties the same uses


def test_untouched_uses_stay_shared() -> None:
    m = _merged()
    pruned, plan, _ = prune_checked(m, 0.5, selection=Selection(exclude=["b"]))  # branch b keeps its channels
    inits = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert inits["gamma"] == [6] and inits["gamma__spa_use0"] == [3] and "gamma__spa_use1" not in inits
    bn_b = next(n for n in pruned.graph.node if n.op_type == "BatchNormalization" and n.input[0] == "b")
    assert list(bn_b.input[1:]) == list(PARAMS)
    assert len(pruned.graph.initializer) == len(m.graph.initializer) + len(PARAMS) + 1  # one copy per sliced use


def test_a_module_applied_twice_keeps_one_tensor() -> None:
    """Uses that coupling puts in one place (one conv weight, so one group) are joined again."""
    a = spa.analyze(_merged(shared_conv=True))
    g = group_of(a, "a.w", 0)
    assert g.prunable and ("gamma", 0) in g.members and ("s", 1) in g.members
    assert not any("__spa_use" in t for t, _ in g.members)
    pruned, plan, _ = prune_checked(_merged(shared_conv=True), 0.5)
    assert not any("__spa_use" in s.initializer for s in plan.slices)
    assert not any("__spa_use" in t.name for t in pruned.graph.initializer)
