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

from dataclasses import dataclass

import numpy as np
import onnx

from spa.graph import ModelContext, Space, attr, node_label
from spa.rules.base import Coupling, KeptMap, Rule, dim_or_block, register


def quant_axis(node: onnx.NodeProto, ctx: ModelContext) -> int | None:
    """The quantized axis of a per-axis node (normalised), or None for per-tensor quantization."""
    scale = node.input[1]
    rank_s, rank_x = ctx.rank(scale), ctx.rank(node.input[0])
    if rank_s is None or rank_s == 0 or rank_x is None:
        return None
    if rank_s == 1 and ctx.dim(scale, 0) == 1 and ctx.dim(node.input[0], int(attr(node, "axis", 1)) % rank_x) != 1:  # type: ignore[arg-type]
        return None  # a one-element scale: per-tensor
    return int(attr(node, "axis", 1)) % rank_x  # type: ignore[arg-type]


@register
class QuantizeDequantizeRule(Rule):
    """``y = (x - zp) * scale`` or ``y = round(x / scale) + zp``: axis for axis, per-axis
    parameters coupled to their axis."""

    op_types = ("QuantizeLinear", "DequantizeLinear")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        params = [t for t in node.input[1:3] if t]
        rank = ctx.rank(x)
        if rank is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        if int(attr(node, "block_size", 0)) > 0:  # type: ignore[arg-type]
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
        if k == int(attr(node, "axis", 1)) % rank:  # type: ignore[arg-type]
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


@dataclass(frozen=True)
class QOp:
    """How a QOperator node reads like its float counterpart: the op type, the positions of its
    data inputs (in the float op's order), and its per-channel weight parameters: the weight's
    codes (``weight``), their scale and zero point, and the output axis they follow."""

    float_op: str
    data: tuple[int, ...]
    weight: int | None = None
    weight_params: tuple[int, ...] = ()
    bias: int | None = None


QOPS: dict[str, QOp] = {
    "QLinearConv": QOp("Conv", (0, 3, 8), weight=3, weight_params=(4, 5), bias=8),
    "QLinearMatMul": QOp("MatMul", (0, 3), weight=3, weight_params=(4, 5)),
    "com.microsoft::QGemm": QOp("Gemm", (0, 3, 6), weight=3, weight_params=(4, 5), bias=6),
    "com.microsoft::QLinearAdd": QOp("Add", (0, 3)),
    "com.microsoft::QLinearMul": QOp("Mul", (0, 3)),
    "com.microsoft::QLinearGlobalAveragePool": QOp("GlobalAveragePool", (0,)),
    "com.microsoft::QLinearAveragePool": QOp("AveragePool", (0,)),
    "com.microsoft::QLinearLeakyRelu": QOp("LeakyRelu", (0,)),
    "com.microsoft::QLinearSigmoid": QOp("Sigmoid", (0,)),
}


def qop_of(node: onnx.NodeProto) -> QOp | None:
    key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
    return QOPS.get(key)


def float_view(node: onnx.NodeProto, q: QOp) -> onnx.NodeProto:
    """``node`` as its float op: the data inputs only, same outputs and attributes (less
    QOperator-only ones), same name."""
    proxy = onnx.helper.make_node(q.float_op, [node.input[i] if i < len(node.input) else "" for i in q.data],
                                  [node.output[0]], name=node.name)
    while proxy.input and not proxy.input[-1]:
        proxy.input.pop()
    proxy.attribute.extend(a for a in node.attribute if a.name != "channels_last")
    return proxy


def _weight_axis(node: onnx.NodeProto, q: QOp) -> int:
    """The axis of the weight codes that per-channel parameters follow (output channels)."""
    if q.float_op == "Gemm":
        return 0 if int(attr(node, "transB", 0)) else 1  # type: ignore[arg-type]
    return 1 if q.float_op == "MatMul" else 0


class _QOperatorRule(Rule):
    """A QOperator node couples its data like its float op (:data:`QOPS`); per-channel weight
    scales and zero points follow the weight's output axis. Refuses channels-last pooling and
    asking about per-tensor scales and zero points."""

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        from spa.rules.base import rule_for

        q = qop_of(node)
        assert q is not None
        view = float_view(node, q)
        rule = rule_for(view)
        return [] if rule is None else rule.seeds(view, ctx)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        from spa.rules.base import rule_for

        q = qop_of(node)
        assert q is not None
        if int(attr(node, "channels_last", 0)):  # type: ignore[arg-type]
            return Coupling().block(space, f"{node_label(node)} is channels-last")
        view = float_view(node, q)
        rule = rule_for(view)
        assert rule is not None, q.float_op
        params = [node.input[i] for i in q.weight_params if i < len(node.input) and node.input[i]]
        w = node.input[q.weight] if q.weight is not None else None
        per_channel = [p for p in params if ctx.rank(p) == 1 and (ctx.dim(p, 0) or 1) > 1]
        if space[0] in per_channel and w is not None:
            asked = (w, _weight_axis(node, q))
            c = rule.couple(view, ctx, asked)
            return c.same(asked, space, ctx.dim(*space) or 0)
        if space[0] not in view.input and space[0] not in view.output:
            return Coupling().block(space, f"{node_label(node)} input '{space[0]}' is a per-tensor scale or zero point")
        c = rule.couple(view, ctx, space)
        if w is not None and per_channel:
            axis = _weight_axis(node, q)
            n = ctx.dim(w, axis)
            if n is not None and (space == (w, axis) or any((w, axis) in (e.a, e.b) for e in c.edges)):
                for p in per_channel:
                    if ctx.dim(p, 0) == n:
                        c.same((w, axis), (p, 0), n)  # type: ignore[arg-type]
        return c

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        from spa.rules.base import rule_for

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


def _weight_reader(ctx: ModelContext, codes: str) -> tuple[onnx.NodeProto, int, int, int | None] | None:
    """The node that reads stored integer ``codes`` as a quantized weight: ``(node, scale input,
    zero-point input, per-channel axis or None)``; None if there is no single such reader."""
    readers = ctx.consumers.get(codes, ())
    if len(readers) != 1:
        return None
    node = readers[0]
    if node.op_type == "DequantizeLinear" and node.input[0] == codes:
        if int(attr(node, "block_size", 0)) > 0:  # type: ignore[arg-type]
            return None
        return node, 1, 2, quant_axis(node, ctx)
    q = qop_of(node)
    if q is None or q.weight is None or node.input[q.weight] != codes:
        return None
    scale = node.input[q.weight_params[0]]
    per_channel = ctx.rank(scale) == 1 and (ctx.dim(scale, 0) or 1) > 1
    return node, q.weight_params[0], q.weight_params[1], _weight_axis(node, q) if per_channel else None


def dequantized(ctx: ModelContext, codes: str) -> np.ndarray | None:
    """The float values of stored integer ``codes`` that a DequantizeLinear or a QOperator node
    reads as a weight, from its stored scale and zero point; None for any other tensor."""
    found = _weight_reader(ctx, codes)
    if found is None:
        return None
    node, si, zi, axis = found
    scale = ctx.constant_value(node.input[si])
    zp = ctx.constant_value(node.input[zi]) if len(node.input) > zi and node.input[zi] else None
    if scale is None:
        return None
    q = ctx.array(codes)
    shape = [1] * q.ndim
    if axis is not None:
        shape[axis] = -1
    s = np.asarray(scale, dtype=np.float64).reshape(shape)
    z = 0.0 if zp is None else np.asarray(zp, dtype=np.float64).reshape(shape)
    return (q.astype(np.float64) - z) * s


def _data_positions(node: onnx.NodeProto) -> tuple[int, ...] | None:
    """Inputs of a quantized op that carry data (the rest are scales and zero points)."""
    if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain in ("", "ai.onnx"):
        return (0,)
    q = qop_of(node)
    return None if q is None else q.data


def is_quantization_parameter(ctx: ModelContext, name: str) -> bool:
    """True for a tensor only read as a scale or zero point of quantized ops (QDQ or QOperator)."""
    readers = ctx.consumers.get(name, ())
    if not readers:
        return False
    for n in readers:
        data = _data_positions(n)
        if data is None or any(i in data for i, t in enumerate(n.input) if t == name):
            return False
    return True


def is_quantized_weight(ctx: ModelContext, name: str) -> bool:
    """True for stored integer codes read as a weight or bias of quantized ops (a DequantizeLinear's
    data, a QLinearConv's weight or int32 bias, ...)."""
    for n in ctx.consumers.get(name, ()):
        if n.op_type == "DequantizeLinear" and n.input[0] == name:
            return True
        q = qop_of(n)
        if q is not None and any(n.input[i] == name for i in (q.weight, q.bias) if i is not None and i < len(n.input)):
            return True
    return False
