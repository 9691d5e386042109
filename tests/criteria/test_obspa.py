"""OBSPA on tiny models whose optimum is known in closed form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelkit import bn, conv, feeds_for, model, run, w
from onnx import helper
from spa.criteria import get_criterion

import spa
from spa.records import Scoring

ZOO_DIR = Path(__file__).resolve().parents[2] / "models" / "zoo"


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
    pruned, plan, report = spa.prune(m, ratio=0.2, criterion="obspa", scoring=Scoring(stats=stats, calib=calib))
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
    pruned, plan, _ = spa.prune(m, ratio=0.34, criterion="obspa", scoring=Scoring(stats="synthetic"))
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
    pruned, plan, _ = spa.prune(m, ratio=0.25, criterion="obspa", scoring=Scoring(stats="moments"))
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
    from spa.analysis.consumers import find_consumers

    counts = []
    for exporter in ("ts", "dynamo"):
        a = spa.analyze(zoo / f"resnet_basic.{exporter}.onnx")
        counts.append(sum(len(find_consumers(g, a.ctx)) for g in a.prunable))
    assert counts[0] == counts[1] > 1


# ---- synthetic inputs, the two worlds, and the linear algebra behind sequential compensation ----

def _conv_model() -> object:
    inits: dict = {}
    nodes = [conv("x", "a", 3, 4, inits=inits), bn("a", "n", 4, inits), helper.make_node("Relu", ["n"], ["r"]),
             conv("r", "y", 4, 2, k=1, inits=inits)]
    return model(nodes, {"x": ["N", 3, 16, 16]}, {"y": ["N", 2, 16, 16]}, inits)


def test_synthetic_image_inputs_are_standardised_smooth_fields() -> None:
    from spa.scoring.synthetic import synthetic_batches

    ctx = spa.analyze(_conv_model()).ctx
    (a,), (b,) = list(synthetic_batches(ctx, 1, 8, seed=0)), list(synthetic_batches(ctx, 1, 8, seed=1))
    x = a["x"]
    assert x.shape == (8, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(2, 3)), 1, atol=1e-4)
    neighbour = float(np.mean(x[..., 1:] * x[..., :-1]))  # natural-image spectrum: neighbours correlate
    assert neighbour > 0.6
    assert np.array_equal(x, next(synthetic_batches(ctx, 1, 8, seed=0))["x"]) and not np.array_equal(x, b["x"])
    dense = spa.analyze(_mlp_with_scaled_copy()).ctx  # no conv reads it: white N(0, 1)
    v = next(synthetic_batches(dense, 1, 64, seed=0))["x"]
    assert v.shape == (64, 4) and abs(float(np.mean(v[:, 1:] * v[:, :-1]))) < 0.2


def _linear3(hidden: int = 5) -> object:
    """Three Linear layers on (N, T, 4) as the TorchScript exporter writes them:
    MatMul(x, Transpose(W)) + b, with ReLUs between."""
    inits = {"w1": w(hidden, 4, seed=1), "b1": w(hidden, seed=2), "w2": w(hidden, hidden, seed=3),
             "b2": w(hidden, seed=4), "w3": w(3, hidden, seed=5), "b3": w(3, seed=6)}
    nodes = []
    x = "x"
    for k in (1, 2, 3):
        nodes += [helper.make_node("Transpose", [f"w{k}"], [f"t{k}"], perm=[1, 0]),
                  helper.make_node("MatMul", [x, f"t{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"b{k}"], [f"h{k}"])]
        if k < 3:
            nodes.append(helper.make_node("Relu", [f"h{k}"], [f"r{k}"]))
            x = f"r{k}"
    return model(nodes, {"x": ["N", 6, 4]}, {"h3": ["N", 6, 3]}, inits)


def test_pruned_world_reads_the_weights_installed_at_a_stop() -> None:
    from spa.analysis.consumers import find_consumers
    from spa.scoring.worlds import PrunedWorld, Worlds

    m = _linear3()
    a = spa.analyze(m)
    groups = {g.describe(a.ctx): g for g in a.prunable}
    consumers = [c for g in a.prunable for c in find_consumers(g, a.ctx)]
    assert sorted(c.kind for c in consumers) == ["matmul_t", "matmul_t"]
    g1 = next(g for g in groups.values() if any(t == "w1" for t, _ in g.members))
    masks = {t: [(ax, np.flatnonzero(g1.unit_of[(t, ax)] == 0))] for t, ax in g1.params(a.ctx)}
    for c in consumers:
        masks.setdefault(c.weight, [])
        masks.setdefault(c.bias, [])  # type: ignore[arg-type]
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 6, 4)).astype(np.float32)}
    worlds = Worlds(a.ctx, consumers, [feeds], batch_stats=False, pruned=PrunedWorld(masks, {}, {}))
    new_w2, new_b2 = w(5, 5, seed=9), w(5, seed=10)
    seen = []
    for stop in worlds.stops():
        assert stop.x_pruned is not None
        seen.append((stop.consumer.weight, stop.x[0], stop.x_pruned[0]))
        if stop.consumer.weight == "w2":
            worlds.install(stop.consumer, new_w2, new_b2)
    assert [s[0] for s in seen] == ["w2", "w3"]
    x = feeds["x"]
    r1 = np.maximum(x @ a.ctx.array("w1").T + a.ctx.array("b1"), 0)
    np.testing.assert_allclose(seen[0][1], r1, rtol=1e-5, atol=1e-5)
    r1[..., 0] = 0  # unit 0 of the first hidden layer is removed in the pruned world
    np.testing.assert_allclose(seen[0][2], r1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(seen[1][2], np.maximum(r1 @ new_w2.T + new_b2, 0), rtol=1e-5, atol=1e-5)


def test_low_rank_and_cholesky_inverses_match_numpy() -> None:
    from spa.scoring.input_moments import shrunk_moment
    from spa.scoring.obs import LowRankH, ObsLayer, moment, shrink, spd_inverse

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((40, 300)) + 0.5).astype(np.float32)  # fewer rows than columns
    lr = shrunk_moment(x)
    assert isinstance(lr, LowRankH)
    dense = shrink(moment(x), len(x))
    np.testing.assert_allclose(lr.dense(), dense, atol=1e-6)
    got = ObsLayer(np.zeros((1, 301)), np.arange(300), lowrank=lr).damped_inverse()
    want = ObsLayer(np.zeros((1, 301)), np.arange(300), h=dense).damped_inverse()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    a = rng.standard_normal((700, 500))
    h = a.T @ a / 700 + 0.1 * np.eye(500)
    np.testing.assert_allclose(spd_inverse(h), np.linalg.inv(h), rtol=1e-7, atol=1e-9)


def test_conv_rows_are_patches_at_the_same_positions_in_both_worlds() -> None:
    from spa.analysis.consumers import find_consumers
    from spa.scoring.input_moments import input_rows
    from spa.scoring.stats import conv_windows

    a = spa.analyze(_conv_model())
    c = next(c for g in a.prunable for c in find_consumers(g, a.ctx) if c.kind == "conv")
    x = np.random.default_rng(5).standard_normal((3, 4, 16, 16)).astype(np.float32)
    rows = input_rows(c, a.ctx, [x])
    assert rows is not None and rows.shape == (3 * 16 * 16, c.cols)  # every position fits the budget
    win = conv_windows(x, c.node, (1, 1)).reshape(3, 4, 16 * 16).transpose(0, 2, 1).reshape(-1, 4)
    assert {tuple(r) for r in rows} == {tuple(r) for r in win}
    twice = input_rows(c, a.ctx, [2 * x])
    assert twice is not None and np.array_equal(twice, 2 * rows)


def test_moment_samples_are_freed_after_their_last_reader() -> None:
    from spa.analysis.consumers import find_consumers
    from spa.scoring.stats import MomentEstimator, consumer_statistics

    a = spa.analyze(spa.load_model(ZOO_DIR / "resnet_basic.ts.onnx"))
    cs = sorted((c for g in a.prunable for c in find_consumers(g, a.ctx)), key=lambda c: a.ctx.node_index[c.node.name])
    free = MomentEstimator(a.ctx, seed=0, readers=[c.x for c in cs])
    kept = MomentEstimator(a.ctx, seed=0)
    for c in cs:
        s1, s2 = consumer_statistics(c, free), consumer_statistics(c, kept)
        free.done(c.x)
        h1 = s1() if callable(s1) else s1
        h2 = s2() if callable(s2) else s2
        assert np.array_equal(np.asarray(h1, dtype=object), np.asarray(h2, dtype=object)) if isinstance(h1, tuple) \
            else np.array_equal(h1, h2)
    assert sum(v is not None for v in free._memo.values()) < 3 < sum(v is not None for v in kept._memo.values())


def test_default_statistics_are_synthetic_and_sequential(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    crit = get_criterion("obspa")
    assert crit.stats == "synthetic"
    with caplog.at_level(logging.INFO, logger="spa.criteria.obspa"):
        _, plan, _ = spa.prune(_conv_model(), ratio=0.5, criterion="obspa")
    assert plan.options["stats"] == "synthetic" and any("sequential" in r.getMessage() for r in caplog.records)


# The TorchScript exports, BatchNorms kept (batch-statistics worlds); docs/coverage.md's
# cli_default rows (tests/test_coverage.py) run obspa on both exporters' default exports.
@pytest.mark.parametrize("name", sorted(p.name for p in ZOO_DIR.glob("*.ts.onnx")))
def test_default_obspa_prunes_every_zoo_model(name: str) -> None:
    import onnx

    original = spa.load_model(ZOO_DIR / name)
    pruned, plan, report = spa.prune(original, ratio=0.4, criterion="obspa", verify_result=True)
    onnx.checker.check_model(pruned, full_check=True)
    assert plan.compensated and plan.options["stats"] == "synthetic" and report.after.params < report.before.params
    v = report.verification
    assert v is not None and v.mode == "drift" and all(np.isfinite(o.max_abs) for o in v.outputs)
