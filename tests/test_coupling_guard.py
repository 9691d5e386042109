"""The coupling graph refuses a rule's answer that links indices past a tensor's size."""

from __future__ import annotations

import numpy as np
import pytest
from modelkit import conv, group_of, model
from onnx import helper

import spa
from spa.analysis.rules.base import Coupling
from spa.analysis.rules.elementwise import UnaryRule


def test_out_of_range_edge_blocks_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Such an edge would merge units of unrelated tensors in the union-find (the broadcast bug
    of FocalNet's gates did that); the group is blocked with the node named instead."""
    def buggy(self, node, ctx, space):  # noqa: ANN001, ANN202
        other = (node.output[0], 1) if space[0] == node.input[0] else (node.input[0], 1)
        return Coupling().link(space, other, np.array([0, 1]), np.array([0, 99]))

    monkeypatch.setattr(UnaryRule, "couple", buggy)
    inits: dict = {}
    nodes = [conv("x", "a", 3, 4, inits=inits), helper.make_node("Relu", ["a"], ["r"], name="act"),
             conv("r", "y", 4, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert not g.prunable and any("Relu 'act' gave indices out of range" in r for r in g.blocked)
