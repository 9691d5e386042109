"""Quantization in QDQ form: QuantizeLinear and DequantizeLinear.

Both map every axis of their input to the same axis of their output, so channels pass through
them. Per-tensor quantization has one scale and zero point for all channels. Per-axis
quantization (a 1-D scale along ``axis``, as onnxruntime's ``quantize_static(per_channel=True)``
writes a Conv's weight and bias) couples the scale and zero point to that axis: pruning a
channel removes its code, its scale and its zero point together. A Conv reading
``DequantizeLinear(W_q, scale, zp)`` is pruned like one reading ``W``: the int8 codes are sliced.

Refuses blocked quantization (``block_size`` > 0) on the blocked axis, and asking about the
scale or zero-point inputs of a per-tensor node.
"""

from __future__ import annotations

import onnx

from spa.analysis.rules.base import Coupling, KeptMap, Rule, dim_or_block, rank_or_block, register, rule_for
from spa.model.graph import ModelContext, Space, attr_int, node_label
from spa.model.quant import float_view, qop_of, quant_axis, weight_axis


@register
class QuantizeDequantizeRule(Rule):
    """``y = (x - zp) * scale`` or ``y = round(x / scale) + zp``: axis for axis, per-axis
    parameters coupled to their axis."""

    op_types = ("QuantizeLinear", "DequantizeLinear")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        params = [t for t in node.input[1:3] if t]
        rank = rank_or_block(ctx, c, space, node, x)
        if rank is None:
            return c
        if attr_int(node, "block_size", 0) > 0:
            return self._blocked(node, ctx, space, rank, params)
        axis = quant_axis(node, ctx)
        if space[0] in params:
            if axis is None or ctx.rank(space[0]) != 1:
                return c.block(space, f"{node_label(node)} input '{space[0]}' is a per-tensor scale or zero point")
            k = axis
        else:
            k = space[1]
        n = dim_or_block(ctx, c, (x, k), node, space)
        if n is None:
            return c
        c.same((x, k), (y, k), n)
        if k == axis:
            for p in params:
                if ctx.rank(p) == 1:
                    c.same((x, k), (p, 0), n)
        return c

    def _blocked(self, node: onnx.NodeProto, ctx: ModelContext, space: Space, rank: int, params: list[str]) -> Coupling:
        """Blocked quantization: scales and zero points have the input's rank, one entry per block
        along ``axis`` and one per index elsewhere; every axis but ``axis`` passes through."""
        c = Coupling()
        x, y = node.input[0], node.output[0]
        k = space[1]
        if k == attr_int(node, "axis", 1) % rank:
            return c.block(space, f"{node_label(node)} uses blocked quantization (block_size) along axis {k}")
        n = dim_or_block(ctx, c, (x, k), node, space)
        if n is None:
            return c
        c.same((x, k), (y, k), n)
        for p in params:
            if ctx.rank(p) == rank and ctx.dim(p, k) == n:
                c.same((x, k), (p, k), n)
        return c


# ---------------------------------------------------------------- QOperator form



class _QOperatorRule(Rule):
    """A QOperator node couples its data like its float op (:data:`QOPS`); per-channel weight
    scales and zero points follow the weight's output axis. Refuses channels-last pooling and
    asking about per-tensor scales and zero points."""

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        q = qop_of(node)
        assert q is not None
        view = float_view(node, q)
        rule = rule_for(view)
        return [] if rule is None else rule.seeds(view, ctx)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        q = qop_of(node)
        assert q is not None
        if attr_int(node, "channels_last", 0):
            return Coupling().block(space, f"{node_label(node)} is channels-last")
        view = float_view(node, q)
        rule = rule_for(view)
        assert rule is not None, q.float_op
        params = [node.input[i] for i in q.weight_params if i < len(node.input) and node.input[i]]
        w = node.input[q.weight] if q.weight is not None else None
        per_channel = [p for p in params if ctx.rank(p) == 1 and (ctx.dim(p, 0) or 1) > 1]
        if space[0] in per_channel and w is not None:
            asked = (w, weight_axis(node, q))
            c = rule.couple(view, ctx, asked)
            return c.same(asked, space, ctx.dim(*space) or 0)
        if space[0] not in view.input and space[0] not in view.output:
            return Coupling().block(space, f"{node_label(node)} input '{space[0]}' is a per-tensor scale or zero point")
        c = rule.couple(view, ctx, space)
        if w is not None and per_channel:
            axis = weight_axis(node, q)
            n = ctx.dim(w, axis)
            if n is not None and (space == (w, axis) or any((w, axis) in (e.a, e.b) for e in c.edges)):
                for p in per_channel:
                    if ctx.dim(p, 0) == n:
                        c.same((w, axis), (p, 0), n)
        return c

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        q = qop_of(node)
        assert q is not None
        view = float_view(node, q)
        rule = rule_for(view)
        if rule is None or not rule.update_attributes(view, ctx, kept):
            return False
        new = {a.name: a for a in view.attribute}
        for a in node.attribute:
            if a.name in new:
                a.CopyFrom(new[a.name])
        return True


@register
class QLinearRule(_QOperatorRule):
    op_types = ("QLinearConv", "QLinearMatMul")


@register
class ContribQLinearRule(_QOperatorRule):
    domain = "com.microsoft"
    op_types = ("QGemm", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool",
                "QLinearLeakyRelu", "QLinearSigmoid")


# ---------------------------------------------------------------- scores and counts



