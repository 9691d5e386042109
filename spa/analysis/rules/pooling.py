"""Pooling and reductions: channels pass through unchanged, spatial axes are consumed."""

from __future__ import annotations

import onnx

from spa.analysis.rules.base import Coupling, Rule, dim_or_block, register
from spa.model.graph import ModelContext, Space, attr_int, attr_ints, node_label


@register
class PoolRule(Rule):
    """(Global) Max/Average/Lp pooling keeps the batch and channel axes.

    Refuses when MaxPool's ``Indices`` output is used: its values encode flat positions that
    include the channel index.
    """

    op_types = (
        "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
        "GlobalLpPool",
    )  # fmt: skip

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        if len(node.output) > 1 and node.output[1]:
            return c.block(space, f"{node_label(node)} Indices output encodes channel positions")
        if space[1] > 1:
            return c.block(space, f"{node_label(node)} pools over axis {space[1]} of '{space[0]}'")
        n = dim_or_block(ctx, c, space, node, space)
        if n is not None:
            for t in (node.input[0], node.output[0]):
                if t != space[0]:
                    c.same(space, (t, space[1]), n)
        return c


def reduce_axes(node: onnx.NodeProto, ctx: ModelContext) -> list[int] | None:
    """The axes a Reduce* node reduces (normalised), or None when they are not constant."""
    rank = ctx.rank(node.input[0])
    if rank is None:
        return None
    axes = attr_ints(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        v = ctx.constant_value(node.input[1])
        if v is None:
            return None
        axes = [int(a) for a in v.reshape(-1)]
    if not axes:
        if attr_int(node, "noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted(a % rank for a in axes)


_SUMS = ("ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare")


@register
class ReduceRule(Rule):
    """Reductions over axes other than the channel axis (e.g. ReduceMean over H, W).

    Over the channel axis itself: sums (ReduceSum, ReduceL1, ReduceL2, ReduceSumSquare) are
    exact without the removed (zero) channels; ReduceMean is approximate (the statistics of a
    decomposed LayerNorm or RMSNorm, pruned only with ``--prune-norm-axes``); the others are
    refused, as are axes computed at run time.
    """

    op_types = (
        "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
        "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
    )  # fmt: skip

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        axes = reduce_axes(node, ctx)
        if axes is None:
            return c.block(space, f"{node_label(node)} reduction axes unknown")
        keep = attr_int(node, "keepdims", 1)
        rank = ctx.rank(node.input[0]) or 0
        if space[0] == node.input[0]:
            a_in = space[1]
            if a_in in axes:
                if node.op_type in _SUMS:
                    return c  # removed channels are zeros in the masked model: a sum without them is the same
                if node.op_type == "ReduceMean":
                    # The statistics of a decomposed LayerNorm / RMSNorm: the mean over fewer
                    # channels differs, as for LayerNormalization.
                    c.inexact.append(f"{node_label(node)} averages over pruned axis {a_in} of '{space[0]}'")
                    return c
                return c.block(space, f"{node_label(node)} reduces over axis {a_in} of '{space[0]}'")
            a_out = a_in if keep else a_in - sum(1 for r in axes if r < a_in)
        else:
            a_out = space[1]
            kept_axes = list(range(rank)) if keep else [i for i in range(rank) if i not in axes]
            a_in = kept_axes[a_out]
            if a_in in axes:
                return c.block(space, f"{node_label(node)} output axis {a_out} is reduced")
        n = dim_or_block(ctx, c, space, node, space)
        if n is not None:
            c.same((node.input[0], a_in), (node.output[0], a_out), n)
        return c
