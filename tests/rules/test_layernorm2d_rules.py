"""Channels-first LayerNorm (ConvNeXt's LayerNorm2d: permute NCHW->NHWC, LayerNorm over the last
axis, permute back) and a layer scale: blocked by default with the opt-in reason, pruned with
``--prune-norm-axes`` (drift reported). A LayerNorm over C, H and W at once is refused."""

from __future__ import annotations

from modelkit import conv, group_of, init_shape, model, w
from onnx import helper

import spa
from spa.records import Selection


def _convnext_like(axis: int = -1):
    """conv -> NHWC -> LayerNorm -> NCHW -> gamma (C, 1, 1) * x -> conv."""
    inits: dict = {"g": w(8), "b": w(8), "gamma": w(8, 1, 1)}
    if axis != -1:
        inits["g"], inits["b"] = w(8, 4, 4), w(8, 4, 4)
    nodes = [conv("x", "a", 3, 8, inits=inits)]
    if axis == -1:
        nodes += [helper.make_node("Transpose", ["a"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
                  helper.make_node("LayerNormalization", ["nhwc", "g", "b"], ["n"], name="ln2d", axis=-1),
                  helper.make_node("Transpose", ["n"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2])]
    else:
        nodes.append(helper.make_node("LayerNormalization", ["a", "g", "b"], ["nchw"], name="ln2d", axis=axis))
    nodes += [helper.make_node("Mul", ["gamma", "nchw"], ["s"], name="layer_scale"),
              conv("s", "y", 8, 2, inits=inits)]
    return model(nodes, {"x": ["N", 3, 4, 4]}, {"y": ["N", 2, 4, 4]}, inits)


def test_permuted_layernorm_blocks_with_opt_in_reason() -> None:
    g = group_of(spa.analyze(_convnext_like()), "a.w", 0)
    assert {("g", 0), ("b", 0), ("gamma", 0), ("y.w", 1)} <= set(g.members)
    assert not g.prunable
    assert any("LayerNormalization 'ln2d'" in r and "--prune-norm-axes" in r for r in g.blocked), g.blocked


def test_permuted_layernorm_opt_in_prunes_with_drift() -> None:
    m = _convnext_like()
    pruned, plan, report = spa.prune(m, ratio=0.5, verify_result=True, selection=Selection(prune_norm_axes=True))
    assert plan.inexact and init_shape(pruned, "g") == [4] and init_shape(pruned, "gamma") == [4, 1, 1]
    assert init_shape(pruned, "y.w") == [2, 4, 3, 3]
    assert report.verification is not None and report.verification.mode == "drift"
    assert report.verification.passed


def test_layernorm_over_channels_and_space_is_refused() -> None:
    a = spa.analyze(_convnext_like(axis=1), prune_norm_axes=True)
    g = group_of(a, "a.w", 0)
    assert not g.prunable and any("LayerNormalization 'ln2d' normalises over several axes" in r for r in g.blocked)
