"""Selecting kept units: floor(ratio·n), at least one kept, --round-to, --global, --exclude."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelkit import conv, group_of, model, prune_checked
from onnx import helper

import spa
from spa.analysis.groups import Group
from spa.errors import InvalidArgumentError
from spa.planning.selection import select_units
from spa.records import Selection

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


def _group(gid: int, n: int) -> Group:
    return Group(gid, [("t", 0)], {("t", 0): np.arange(n)}, n)


def test_per_group_floor_and_keeps_highest() -> None:
    scores = {0: np.array([5.0, 1.0, 3.0, 2.0, 4.0]), 1: np.array([1.0, 2.0])}
    kept = select_units([_group(0, 5), _group(1, 2)], scores, 0.5)
    assert kept[0].tolist() == [0, 2, 4]  # floor(2.5) = 2 removed: the two lowest
    assert kept[1].tolist() == [1]  # floor(1.0) = 1 removed


def test_at_least_one_unit_is_kept() -> None:
    kept = select_units([_group(0, 3)], {0: np.array([1.0, 2.0, 3.0])}, 0.99)
    assert kept[0].tolist() == [2]


def test_round_to_rounds_kept_count_up() -> None:
    kept = select_units([_group(0, 20)], {0: np.arange(20.0)}, 0.5, round_to=8)
    assert len(kept[0]) == 16 and kept[0].tolist() == list(range(4, 20))


def test_global_ranking_prunes_weak_groups_more() -> None:
    strong, weak = np.array([10.0, 10.0, 10.0, 10.0]), np.array([10.0, 0.1, 0.1, 0.1])
    kept = select_units([_group(0, 4), _group(1, 4)], {0: strong, 1: weak}, 0.375, global_ranking=True)
    assert kept[0].tolist() == [0, 1, 2, 3] and kept[1].tolist() == [0]


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_ratio_out_of_range(ratio: float) -> None:
    with pytest.raises(InvalidArgumentError):
        select_units([_group(0, 4)], {0: np.ones(4)}, ratio)


def test_round_to_and_global_on_a_real_model() -> None:
    pruned, plan, report = spa.prune(ZOO / "resnet_bottleneck.ts.onnx", ratio=0.5, selection=Selection(round_to=4))
    for s in plan.slices:
        assert len(s.keep) % 4 == 0 or len(s.keep) == s.size
    _, plan_g, report_g = spa.prune(ZOO / "resnet_bottleneck.ts.onnx", ratio=0.5,
                                    selection=Selection(global_ranking=True))
    assert report_g.after.params < report_g.before.params
    assert plan_g.options["global"] is True


def test_exclude_blocks_matching_groups_only() -> None:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("Relu", ["a"], ["r"]),
             conv("r", "b", 6, 6, inits=inits), helper.make_node("Relu", ["b"], ["s"]),
             conv("s", "c", 6, 6, inits=inits), helper.make_node("Relu", ["c"], ["t"]),
             conv("t", "y", 6, 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    a = spa.analyze(m, exclude=["b"])  # node 'b' reads a's channels and writes its own
    assert any("--exclude 'b'" in r for r in group_of(a, "a.w", 0).blocked)
    assert any("--exclude 'b'" in r for r in group_of(a, "b.w", 0).blocked)
    assert group_of(a, "c.w", 0).prunable
    _, plan, _ = prune_checked(m, 0.5, selection=Selection(exclude=["b"]))
    assert {s.initializer for s in plan.slices} == {"c.w", "c.b", "y.w"}
    a = spa.analyze(m, exclude=["c.b"])  # an initializer pattern
    assert not group_of(a, "c.w", 0).prunable and group_of(a, "a.w", 0).prunable
