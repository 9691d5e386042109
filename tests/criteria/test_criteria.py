"""Magnitude criteria: aggregation over the whole group, BN scale, seeded random."""

from __future__ import annotations

import numpy as np
import pytest
from modelkit import bn, conv, group_of, model, prune_checked
from onnx import helper, numpy_helper

import spa
from spa.criteria import CRITERIA, get_criterion
from spa.errors import InvalidArgumentError


def _model(inits: dict):
    nodes = [conv("x", "a", 3, 4, inits=inits), bn("a", "n", 4, inits), helper.make_node("Relu", ["n"], ["r"]),
             conv("r", "y", 4, 2, inits=inits)]
    return model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)


def test_l1_l2_aggregate_every_member() -> None:
    inits: dict = {}
    m = _model(inits)
    a = spa.analyze(m)
    g = group_of(a, "a.w", 0)
    members = {t: ax for t, ax in g.params(a.ctx)}
    exp_l1 = np.zeros(4)
    exp_l2 = np.zeros(4)
    for t, ax in members.items():
        arr = np.moveaxis(inits[t].astype(np.float64), ax, 0).reshape(4, -1)
        exp_l1 += np.abs(arr).sum(1)
        exp_l2 += np.square(arr).sum(1)
    np.testing.assert_allclose(get_criterion("l1").score(g, a.ctx), exp_l1)
    np.testing.assert_allclose(get_criterion("l2").score(g, a.ctx), np.sqrt(exp_l2))
    assert set(members) == {"a.w", "a.b", "n.g", "n.b", "n.m", "n.v", "y.w"}


def test_bn_scale_uses_gamma_and_prunes_smallest() -> None:
    m = _model({})
    gamma = next(t for t in m.graph.initializer if t.name == "n.g")
    gamma.CopyFrom(numpy_helper.from_array(np.array([0.1, -5.0, 0.2, 3.0], np.float32), "n.g"))
    a = spa.analyze(m)
    np.testing.assert_allclose(get_criterion("bn-scale").score(group_of(a, "a.w", 0), a.ctx), [0.1, 5.0, 0.2, 3.0],
                               rtol=1e-6)
    _, plan, _ = prune_checked(m, 0.5, criterion="bn-scale")
    assert next(s.keep for s in plan.slices if s.initializer == "a.w") == [1, 3]


def test_random_is_seeded_and_differs_between_seeds() -> None:
    a = spa.analyze(_model({}))
    g = group_of(a, "a.w", 0)
    s0 = get_criterion("random", seed=0).score(g, a.ctx)
    assert np.array_equal(s0, get_criterion("random", seed=0).score(g, a.ctx))
    assert not np.array_equal(s0, get_criterion("random", seed=1).score(g, a.ctx))


@pytest.mark.parametrize("name", sorted(n for n, c in CRITERIA.items() if not getattr(c, "needs_labels", False)))
def test_scores_finite_one_per_unit(name: str) -> None:  # criteria that need labels: test_gradient.py
    a = spa.analyze(_model({}))
    for g in a.prunable:
        s = get_criterion(name).score(g, a.ctx)
        assert s.shape == (g.n_units,) and np.all(np.isfinite(s))


def test_unknown_criterion_is_a_user_error() -> None:
    with pytest.raises(InvalidArgumentError, match="choose one of"):
        get_criterion("nope")
