"""Ops that move, join, cut or reshape tensors without computing on channel values.

Concat and Split shift channel indices by offsets; Slice selects a contiguous range; Flatten and
Reshape map one channel to a block (or a strided set) of features; Transpose, Squeeze and
Unsqueeze move axes; Pad and Resize keep the channel axis when they leave it alone.
"""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.base import (
    Coupling,
    KeptMap,
    RewriteSink,
    Rule,
    axes_input,
    dim_or_block,
    identity_all,
    int_input,
    norm_axis,
    position,
    rank_or_block,
    ranks_or_block,
    register,
)
from spa.analysis.rules.shape_reads import reads_own_size
from spa.analysis.rules.shape_vectors import couple_target, rewrite_target, shape_symbols
from spa.model.graph import ModelContext, Space, attr_int, attr_ints, node_label


@register
class TransposeRule(Rule):
    """Transpose: output axis ``b`` is input axis ``perm[b]``."""

    op_types = ("Transpose",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        rank = rank_or_block(ctx, c, space, node, x)
        if rank is None:
            return c
        perm = attr_ints(node, "perm")
        if perm is None:
            perm = list(range(rank))[::-1]
        a_in = space[1] if space[0] == x else perm[space[1]]
        n = dim_or_block(ctx, c, space, node, space)
        return c if n is None else c.same((x, a_in), (y, perm.index(a_in)), n)


@register
class SqueezeRule(Rule):
    """Squeeze / Unsqueeze move axes; the squeezed or inserted axes have size 1."""

    op_types = ("Squeeze", "Unsqueeze")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        ranks = ranks_or_block(ctx, c, space, node, [x, y])
        if ranks is None:
            return c
        rx, ry = ranks
        if position(node, space[0]) == ("in", 1):
            return c.block(space, f"{node_label(node)} axes input is not data")
        big, small, rbig = (x, y, rx) if node.op_type == "Squeeze" else (y, x, ry)
        axes = axes_input(node, ctx, 1)
        if axes is None:
            sb = ctx.shape(big)
            if node.op_type == "Unsqueeze" or sb is None:
                return c.block(space, f"{node_label(node)} axes unknown")
            axes = [i for i, d in enumerate(sb) if d == 1]
        axes = [norm_axis(a, rbig) for a in axes]
        remaining = [i for i in range(rbig) if i not in axes]
        if space[0] == big:
            if space[1] in axes:
                return c.block(space, f"{node_label(node)} removes axis {space[1]}")
            pair = (space, (small, remaining.index(space[1])))
        else:
            pair = (space, (big, remaining[space[1]]))
        n = dim_or_block(ctx, c, space, node, space)
        return c if n is None else c.same(pair[0], pair[1], n)


@register
class PadRule(Rule):
    """Pad that leaves the channel axis unpadded; refuses computed pads or a padded channel axis."""

    op_types = ("Pad",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        if position(node, space[0])[0] == "in" and space[0] != x:
            return c.block(space, f"{node_label(node)} pads/value input is not data")
        rank = ctx.rank(x)
        pads = attr_ints(node, "pads")
        if pads is None:
            pads = int_input(node, ctx, 1)
        if rank is None or pads is None:
            return c.block(space, f"{node_label(node)} pads are not constant")
        axes = int_input(node, ctx, 3) if len(node.input) > 3 and node.input[3] else list(range(rank))
        if axes is None:
            return c.block(space, f"{node_label(node)} axes are not constant")
        axes = [norm_axis(a, rank) for a in axes]
        k = len(axes)
        if space[1] in axes:
            j = axes.index(space[1])
            if pads[j] or pads[j + k]:
                return c.block(space, f"{node_label(node)} pads axis {space[1]}")
        return identity_all(c, ctx, node, space, [x, y])


@register
class ResizeRule(Rule):
    """Resize / Upsample with scale 1 on the channel axis; ``sizes`` is rewritten after pruning."""

    op_types = ("Resize", "Upsample")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        if position(node, space[0])[0] == "in" and space[0] != x:
            return c.block(space, f"{node_label(node)} roi/scales/sizes input is not data")
        if attr_ints(node, "axes") is not None:
            return c.block(space, f"{node_label(node)} uses the axes attribute")
        if ctx.dim(x, space[1]) != ctx.dim(y, space[1]):
            return c.block(space, f"{node_label(node)} resizes axis {space[1]}")
        sizes_idx = 3 if node.op_type == "Resize" else None
        if sizes_idx is not None and len(node.input) > sizes_idx and node.input[sizes_idx]:
            if int_input(node, ctx, sizes_idx) is None and not reads_own_size(ctx, node, space[1]):
                return c.block(space, f"{node_label(node)} sizes are computed at run time")
        return identity_all(c, ctx, node, space, [x, y])

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        """A literal ``sizes`` gets the kept counts; sizes computed at run time read them (see couple)."""
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            return False
        sizes = int_input(node, ctx, 3)
        y = node.output[0]
        if sizes is None:
            return False
        new = list(sizes)
        for a in range(len(new)):
            if (y, a) in kept:
                new[a] = len(kept[(y, a)])
        if new == sizes:
            return False
        return out.set_input_constant(node, 3, np.array(new, dtype=np.int64))


#: Inputs that take a shape vector whose values the rules of those ops follow or rewrite.


@register
class SoftmaxRule(Rule):
    """Softmax-like ops keep every axis they do not normalise over."""

    op_types = ("Softmax", "LogSoftmax", "Hardmax")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        rank = rank_or_block(ctx, c, space, node, node.input[0])
        if rank is None:
            return c
        axis = norm_axis(attr_int(node, "axis", -1 if ctx.opset >= 13 else 1), rank)
        normalised = space[1] == axis if ctx.opset >= 13 else space[1] >= axis
        if normalised:
            return c.block(space, f"{node_label(node)} normalises over axis {space[1]} of '{space[0]}'")
        return identity_all(c, ctx, node, space, [node.input[0], node.output[0]])


@register
class GatherRule(Rule):
    """Gather keeps every data axis except the gathered one (embedding tables included)."""

    op_types = ("Gather",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        data, idx, y = node.input[0], node.input[1], node.output[0]
        ranks = ranks_or_block(ctx, c, space, node, [data, idx])
        if ranks is None:
            return c
        rd, ri = ranks
        axis = norm_axis(attr_int(node, "axis", 0), rd)
        if space[0] == idx and position(node, idx)[0] == "in" and space[0] != data:
            return c.block(space, f"{node_label(node)} indices are not data")
        if space[0] == data:
            a = space[1]
            if a == axis:
                return c.block(space, f"{node_label(node)} gathers along axis {a}")
            b = a if a < axis else a + ri - 1
        else:
            b = space[1]
            if axis <= b < axis + ri:
                return c.block(space, f"{node_label(node)} output axis {b} comes from the indices")
            a = b if b < axis else b - ri + 1
        n = dim_or_block(ctx, c, space, node, space)
        return c if n is None else c.same((data, a), (y, b), n)


@register
class TileRule(Rule):
    """Tile with repeat 1 on the channel axis."""

    op_types = ("Tile",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        # Repeats may be built at run time (TorchScript: Concat(batch size, 1, 1, 1), XCiT's
        # positional encoding); only the channel axis's entry must be a literal 1.
        reps = int_input(node, ctx, 1) or shape_symbols(ctx, node.input[1])
        if position(node, space[0]) == ("in", 1) or reps is None or reps[space[1]] != 1:
            return c.block(space, f"{node_label(node)} repeats axis {space[1]} or repeats unknown")
        return identity_all(c, ctx, node, space, [node.input[0], node.output[0]])


@register
class ExpandRule(Rule):
    """Expand: broadcasting like Add, with the target shape as input 1.

    An axis the input already has is kept as is; an axis created by broadcasting takes its size
    from the target, which must be a rewritable literal or a size read at run time from another
    tensor (then that tensor's axis is coupled) — e.g. the zero bias the dynamo exporter builds
    as ``Expand(0, Shape(W)[0:1])``.
    """

    op_types = ("Expand",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        if position(node, space[0]) == ("in", 1):
            return c.block(space, f"{node_label(node)} shape input is not data")
        ranks = ranks_or_block(ctx, c, space, node, [x, y])
        if ranks is None:
            return c
        rx, ry = ranks
        b = space[1] + (ry - rx) if space[0] == x else space[1]
        n = dim_or_block(ctx, c, (y, b), node, space)
        if n is None:
            return c
        ax = b - (ry - rx)
        if ax >= 0 and ctx.dim(x, ax) == n and (n != 1):
            c.same((x, ax), (y, b), n)
        couple_target(ctx, c, node, b, keep_values=(1,))
        return c

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        return rewrite_target(node, ctx, kept, out, keep_values=(1,))
