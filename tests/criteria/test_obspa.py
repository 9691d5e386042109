"""OBSPA on tiny models whose optimum is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from modelkit import bn, conv, feeds_for, model, run, w
from onnx import helper
from spa.criteria import get_criterion

import spa


def _mlp_with_scaled_copy() -> object:
    w1 = w(5, 4, seed=1)
    b1 = w(5, seed=2)
    w1[3] = 2.5 * w1[1]  # hidden unit 3 is exactly 2.5 x hidden unit 1 (ReLU is positively homogeneous)
    b1[3] = 2.5 * b1[1]
    inits = {"w1": w1, "b1": b1, "w2": w(3, 5, seed=3), "b2": w(3, seed=4)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    return model(nodes, {"x": ["N", 4]}, {"y": ["N", 3]}, inits)


@pytest.mark.parametrize("stats", ["synthetic", "data"])
def test_scaled_copy_is_removed_and_output_unchanged(stats: str) -> None:
    m = _mlp_with_scaled_copy()
    calib = {"x": np.random.default_rng(7).standard_normal((256, 4)).astype(np.float32)} if stats == "data" else None
    pruned, plan, report = spa.prune(m, ratio=0.2, criterion="obspa", stats=stats, calib=calib)
    keep = next(s.keep for s in plan.slices if s.initializer == "w1")
    assert len(keep) == 4 and (1 not in keep or 3 not in keep)
    feeds = feeds_for(m, seed=11)
    np.testing.assert_allclose(run(pruned, feeds)[0], run(m, feeds)[0], rtol=1e-4, atol=1e-4)
    assert plan.compensated


def test_reconstructible_linear_input_channel() -> None:
    # Feature 2 of the hidden layer (no activation) equals feature 0 + feature 1 exactly.
    w1 = w(3, 4, seed=5)
    w1[2] = w1[0] + w1[1]
    inits = {"w1": w1, "w2": w(2, 3, seed=6), "b2": w(2, seed=7)}
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)]
    m = model(nodes, {"x": ["N", 4]}, {"y": ["N", 2]}, inits)
    pruned, plan, _ = spa.prune(m, ratio=0.34, criterion="obspa", stats="synthetic")
    assert len(next(s.keep for s in plan.slices if s.initializer == "w1")) == 2
    feeds = feeds_for(m, seed=3)
    np.testing.assert_allclose(run(pruned, feeds)[0], run(m, feeds)[0], rtol=1e-4, atol=1e-4)


def test_constant_channel_folds_into_bias_without_data() -> None:
    # A BatchNorm with gamma = 0 makes its channel the constant beta: removing it costs nothing
    # once its contribution moves into the next layer's bias (data-free moments).
    inits: dict = {}
    nodes = [conv("x", "a", 3, 4, inits=inits), bn("a", "n", 4, inits), helper.make_node("Relu", ["n"], ["r"]),
             conv("r", "y", 4, 2, k=1, inits=inits)]
    inits["n.g"][2] = 0.0
    inits["n.b"][2] = 0.7
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    pruned, plan, _ = spa.prune(m, ratio=0.25, criterion="obspa", stats="moments")
    assert 2 not in next(s.keep for s in plan.slices if s.initializer == "a.w")
    feeds = feeds_for(m, seed=2)
    np.testing.assert_allclose(run(pruned, feeds)[0], run(m, feeds)[0], rtol=1e-4, atol=1e-4)


def test_scores_finite_and_deterministic_on_zoo(zoo) -> None:
    a = spa.analyze(zoo / "resnet_basic.dynamo.onnx")
    s1 = [get_criterion("obspa").score(g, a.ctx) for g in a.prunable]
    crit = get_criterion("obspa")
    crit.prepare(a.prunable, a.ctx)
    s2 = [crit.score(g, a.ctx) for g in a.prunable]
    for x, y in zip(s1, s2):
        assert np.all(np.isfinite(x)) and np.array_equal(x, y)


def test_fluctuation_removes_constant_channel_and_compensates() -> None:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 4, inits=inits), bn("a", "n", 4, inits), helper.make_node("Relu", ["n"], ["r"]),
             conv("r", "y", 4, 2, k=1, inits=inits)]
    inits["n.g"][1] = 0.0
    inits["n.b"][1] = 0.9  # channel 1 is the constant relu(0.9)
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    pruned, plan, _ = spa.prune(m, ratio=0.25, criterion="fluctuation")
    assert 1 not in next(s.keep for s in plan.slices if s.initializer == "a.w") and plan.compensated
    feeds = feeds_for(m, seed=4)
    np.testing.assert_allclose(run(pruned, feeds)[0], run(m, feeds)[0], rtol=1e-4, atol=1e-4)


def test_activation_criterion_removes_dead_channel() -> None:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 4, inits=inits), bn("a", "n", 4, inits), helper.make_node("Relu", ["n"], ["r"]),
             conv("r", "y", 4, 2, k=1, inits=inits)]
    inits["n.g"][3] = 0.0
    inits["n.b"][3] = -1.0  # relu(-1) = 0: a dead channel
    m = model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 2, 5, 5]}, inits)
    _, plan, _ = spa.prune(m, ratio=0.25, criterion="activation")
    assert 3 not in next(s.keep for s in plan.slices if s.initializer == "a.w") and not plan.compensated


def test_both_exporters_give_obspa_the_same_consumers(zoo) -> None:
    from spa.consumers import find_consumers

    counts = []
    for exporter in ("ts", "dynamo"):
        a = spa.analyze(zoo / f"resnet_basic.{exporter}.onnx")
        counts.append(sum(len(find_consumers(g, a.ctx)) for g in a.prunable))
    assert counts[0] == counts[1] > 1
