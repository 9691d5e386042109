"""Quantized tensors as the model stores them: which tensors are integer weight codes or their scales
and zero points, their float values, and how a QOperator node (QLinearConv, QGemm, ...) reads like
its float op. Facts about the model that counting (:mod:`spa.model.metrics`), scoring and the
coupling rules (:mod:`spa.analysis.rules.quant`) share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from spa.model.graph import ModelContext, attr_int


def quant_axis(node: onnx.NodeProto, ctx: ModelContext) -> int | None:
    """The quantized axis of a per-axis node (normalised), or None for per-tensor quantization."""
    scale = node.input[1]
    rank_s, rank_x = ctx.rank(scale), ctx.rank(node.input[0])
    if rank_s is None or rank_s == 0 or rank_x is None:
        return None
    if rank_s == 1 and ctx.dim(scale, 0) == 1 and ctx.dim(node.input[0], attr_int(node, "axis", 1) % rank_x) != 1:
        return None  # a one-element scale: per-tensor
    return attr_int(node, "axis", 1) % rank_x


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


def weight_axis(node: onnx.NodeProto, q: QOp) -> int:
    """The axis of the weight codes that per-channel parameters follow (output channels)."""
    if q.float_op == "Gemm":
        return 0 if attr_int(node, "transB", 0) else 1
    return 1 if q.float_op == "MatMul" else 0


def _weight_reader(ctx: ModelContext, codes: str) -> tuple[onnx.NodeProto, int, int, int | None] | None:
    """The node that reads stored integer ``codes`` as a quantized weight: ``(node, scale input,
    zero-point input, per-channel axis or None)``; None if there is no single such reader."""
    readers = ctx.consumers.get(codes, ())
    if len(readers) != 1:
        return None
    node = readers[0]
    if node.op_type == "DequantizeLinear" and node.input[0] == codes:
        if attr_int(node, "block_size", 0) > 0:
            return None
        return node, 1, 2, quant_axis(node, ctx)
    q = qop_of(node)
    if q is None or q.weight is None or node.input[q.weight] != codes:
        return None
    scale = node.input[q.weight_params[0]]
    per_channel = ctx.rank(scale) == 1 and (ctx.dim(scale, 0) or 1) > 1
    return node, q.weight_params[0], q.weight_params[1], weight_axis(node, q) if per_channel else None


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
