"""Channel shuffle (Reshape -> Transpose -> Reshape) and chunks with bounds read from shapes."""

from __future__ import annotations

import numpy as np
import pytest
from modelkit import conv, group_of, model, prune_checked
from onnx import helper

import spa
from spa.records import Scoring


def _i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def _shuffle(inits: dict, x: str, y: str, computed: bool) -> list:
    """Reshape(1, 2, C/2, H, W) -> Transpose -> Reshape(1, C, H, W), as the two exporters write it."""
    if not computed:
        inits[f"{y}.s1"], inits[f"{y}.s2"] = _i64(1, 2, 4, 4, 4), _i64(1, 8, 4, 4)
        first, last = [x, f"{y}.s1"], [f"{y}.t", f"{y}.s2"]
        nodes = []
    else:  # TorchScript: channels read from Shape and divided by the group count
        inits.update({f"{y}.i1": _i64(1), f"{y}.two": _i64(2), f"{y}.hw": _i64(4, 4), f"{y}.one": _i64(1),
                      f"{y}.m1": _i64(-1)})
        nodes = [helper.make_node("Shape", [x], [f"{y}.shape"]),
                 helper.make_node("Gather", [f"{y}.shape", f"{y}.i1"], [f"{y}.c"], axis=0),
                 helper.make_node("Div", [f"{y}.c", f"{y}.two"], [f"{y}.cg"]),
                 helper.make_node("Concat", [f"{y}.one", f"{y}.two", f"{y}.cg", f"{y}.hw"], [f"{y}.s1"], axis=0),
                 helper.make_node("Concat", [f"{y}.one", f"{y}.m1", f"{y}.hw"], [f"{y}.s2"], axis=0)]
        first, last = [x, f"{y}.s1"], [f"{y}.t", f"{y}.s2"]
    return nodes + [helper.make_node("Reshape", first, [f"{y}.r"]),
                    helper.make_node("Transpose", [f"{y}.r"], [f"{y}.t"], perm=[0, 2, 1, 3, 4]),
                    helper.make_node("Reshape", last, [y])]


@pytest.mark.parametrize("computed", [False, True])
def test_channel_shuffle_permutes_and_keeps_the_grid(computed: bool) -> None:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 8, inits=inits), *_shuffle(inits, "a", "sh", computed),
             conv("sh", "y", 8, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert g.prunable and g.n_units == 4  # position j of both groups is one unit
    assert ("y.w", 1) in g.members
    assert list(g.unit_of[("a.w", 0)]) == [0, 1, 2, 3, 0, 1, 2, 3]
    assert list(g.unit_of[("y.w", 1)]) == [0, 0, 1, 1, 2, 2, 3, 3]
    pruned, plan, _ = prune_checked(m, 0.5)
    assert len(next(s.keep for s in plan.slices if s.initializer == "a.w")) == 4


def test_chunk_with_bounds_read_from_shape() -> None:
    # x[:, :C/2] with C/2 computed from Shape(x) at run time (TorchScript's chunk).
    inits: dict = {"i1": _i64(1), "two": _i64(2), "zero": _i64(0), "ax": _i64(1)}
    nodes = [conv("x", "a", 3, 8, inits=inits),
             helper.make_node("Shape", ["a"], ["shp"]), helper.make_node("Gather", ["shp", "i1"], ["c"], axis=0),
             helper.make_node("Div", ["c", "two"], ["half"]),
             helper.make_node("Slice", ["a", "zero", "half", "ax"], ["lo"]),
             conv("lo", "y", 4, 2, inits=inits), conv("a", "z", 8, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4], "z": [1, 2, 4, 4]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert g.prunable and ("y.w", 1) in g.members
    prune_checked(m, 0.5, criterion="random", scoring=Scoring(seed=3))
