"""Tile whose repeats are built at run time: XCiT's positional encoding tiles a (1, C, H, W) map
over the batch with ``Concat(Shape(x)[0], 1, 1, 1)``; the channel entry is a literal 1."""

from __future__ import annotations

import numpy as np
import onnx
from modelkit import conv, group_of, model, prune_checked, w
from onnx import helper

import spa


def _tiled_positions(channel_repeat: int) -> onnx.ModelProto:
    inits: dict = {"grid": w(1, 2, 4, 4, seed=3), "zero": np.array([0], np.int64),
                   "rest": np.array([channel_repeat, 1, 1], np.int64)}
    nodes = [conv("grid", "pos", 2, 6, inits=inits),  # (1, 6, 4, 4) from a constant grid
             helper.make_node("Shape", ["x"], ["xs"]), helper.make_node("Gather", ["xs", "zero"], ["batch"]),
             helper.make_node("Concat", ["batch", "rest"], ["reps"], axis=0),
             helper.make_node("Tile", ["pos", "reps"], ["tiled"], name="tile"),
             conv("x", "feat", 3, 6, inits=inits)]
    if channel_repeat == 1:
        nodes += [helper.make_node("Add", ["feat", "tiled"], ["s"]), conv("s", "y", 6, 2, inits=inits)]
        return model(nodes, {"x": ["N", 3, 4, 4]}, {"y": ["N", 2, 4, 4]}, inits)
    nodes += [conv("tiled", "y", 6 * channel_repeat, 2, inits=inits), conv("feat", "z", 6, 2, inits=inits)]
    return model(nodes, {"x": ["N", 3, 4, 4]}, {"y": ["N", 2, 4, 4], "z": ["N", 2, 4, 4]}, inits)


def test_run_time_repeats_with_one_on_the_channel_axis_prune() -> None:
    a = spa.analyze(_tiled_positions(1))
    g = group_of(a, "pos.w", 0)
    assert g.prunable and g is group_of(a, "feat.w", 0)
    _, _, report = prune_checked(_tiled_positions(1), 0.5)  # masked equivalence included
    assert report.groups_pruned == 1


def test_channel_axis_repeated_stays_blocked() -> None:
    g = group_of(spa.analyze(_tiled_positions(2)), "pos.w", 0)
    assert not g.prunable and any("Tile 'tile' repeats axis 1" in r for r in g.blocked)
