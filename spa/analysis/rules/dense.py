"""Dense layers: Gemm (either ``transA``/``transB``) and MatMul with a constant weight.

Both create output features (weight columns or rows, bias) and consume input features. A
MatMul whose second input is computed at run time (attention scores) has no weight to slice;
it couples its operands' axes instead (:mod:`spa.analysis.rules.attention`).
"""

from __future__ import annotations

import onnx

from spa.analysis.rules.attention import couple_batched_matmul
from spa.analysis.rules.base import Coupling, Rule, register, tie
from spa.model.graph import ModelContext, Space, attr_int, node_label


@register
class GemmRule(Rule):
    """``Y = alpha·A'·B' + beta·C`` with ``A'`` = A or Aᵀ and ``B'`` = B or Bᵀ."""

    op_types = ("Gemm",)

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        return [(node.output[0], 1)]

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        a, b, y = node.input[0], node.input[1], node.output[0]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        ta = attr_int(node, "transA", 0)
        tb = attr_int(node, "transB", 0)
        if not ctx.is_constant(b):
            return c.block(space, f"{node_label(node)} weight '{b}' is not a constant")
        a_rows, a_k = (1, 0) if ta else (0, 1)
        b_k, b_n = (1, 0) if tb else (0, 1)
        rows: list[Space] = [(a, a_rows), (y, 0)]
        ins: list[Space] = [(a, a_k), (b, b_k)]
        outs: list[Space] = [(y, 1), (b, b_n)]
        if bias:
            rb = ctx.rank(bias)
            if rb is None:
                return c.block(space, f"{node_label(node)} bias rank unknown")
            if rb >= 1 and ctx.dim(bias, rb - 1) != 1:
                outs.append((bias, rb - 1))
            if rb == 2 and ctx.dim(bias, 0) != 1:
                rows.append((bias, 0))
        return tie(ctx, node, space, [rows, ins, outs])


@register
class MatMulRule(Rule):
    """``Y = A @ B`` where B is a constant matrix ``(K, N)``; A may have leading batch axes."""

    op_types = ("MatMul",)

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        b = node.input[1]
        rank = ctx.rank(node.output[0])
        if ctx.is_constant(b) and ctx.rank(b) == 2 and rank is not None:
            return [(node.output[0], rank - 1)]
        return []

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        a, b, y = node.input[0], node.input[1], node.output[0]
        if not ctx.is_constant(b):
            return couple_batched_matmul(ctx, node, space)
        if ctx.rank(b) != 2:
            return c.block(space, f"{node_label(node)} has no constant 2-D weight (input '{b}')")
        ra, ry = ctx.rank(a), ctx.rank(y)
        if ra is None or ry is None or ra < 2:
            return c.block(space, f"{node_label(node)} input rank unknown or < 2")
        sets: list[list[Space]] = [[(a, ra - 1), (b, 0)], [(y, ry - 1), (b, 1)]]
        sets += [[(a, i), (y, i + ry - ra)] for i in range(ra - 1)]
        return tie(ctx, node, space, sets)
