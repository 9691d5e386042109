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

import numpy as np
import onnx

from spa.graph import ModelContext, Space, attr, node_label
from spa.rules.base import Coupling, Rule, dim_or_block, register


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


def dequantized(ctx: ModelContext, codes: str) -> np.ndarray | None:
    """The float values of stored ``codes`` read by a DequantizeLinear as its data input, computed
    from its stored scale and zero point; None when ``codes`` is not such a tensor."""
    readers = [n for n in ctx.consumers.get(codes, ()) if n.op_type == "DequantizeLinear" and n.input[0] == codes]
    if len(readers) != 1:
        return None
    node = readers[0]
    scale = ctx.constant_value(node.input[1])
    zp = ctx.constant_value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    q = ctx.array(codes)
    if scale is None or int(attr(node, "block_size", 0)) > 0:  # type: ignore[arg-type]
        return None
    shape = [1] * q.ndim
    axis = quant_axis(node, ctx)
    if axis is not None and np.asarray(scale).ndim == 1:
        shape[axis] = -1
    s = np.asarray(scale, dtype=np.float64).reshape(shape if np.asarray(scale).size > 1 else [1] * q.ndim)
    z = 0.0 if zp is None else np.asarray(zp, dtype=np.float64).reshape(s.shape)
    return (q.astype(np.float64) - z) * s


def is_quantization_parameter(ctx: ModelContext, name: str) -> bool:
    """True for a tensor only read as the scale or zero point of Quantize/DequantizeLinear."""
    readers = ctx.consumers.get(name, ())
    return bool(readers) and all(
        n.op_type in ("QuantizeLinear", "DequantizeLinear") and name in n.input[1:3] for n in readers)


def is_quantized_weight(ctx: ModelContext, name: str) -> bool:
    """True for stored integer codes read as the data input of a DequantizeLinear."""
    return any(n.op_type == "DequantizeLinear" and n.input[0] == name for n in ctx.consumers.get(name, ()))
