"""Concat, Split and Slice: channels join, part or are cut along an axis, their indices shifted by
offsets; Slice keeps a contiguous (or strided) range."""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.base import (
    Coupling,
    KeptMap,
    RewriteSink,
    Rule,
    dim_or_block,
    identity_all,
    int_input,
    norm_axis,
    position,
    rank_or_block,
    register,
)
from spa.model.graph import ModelContext, Space, attr_int, node_label


@register
class ConcatRule(Rule):
    """Concat: on its axis, input ``k`` occupies ``[offset_k, offset_k + n_k)`` of the output."""

    op_types = ("Concat",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        y = node.output[0]
        rank = rank_or_block(ctx, c, space, node, y)
        if rank is None:
            return c
        axis = norm_axis(attr_int(node, "axis", 0), rank)
        if space[1] != axis:
            return identity_all(c, ctx, node, space, [*node.input, y])
        off = 0
        for t in node.input:
            n = dim_or_block(ctx, c, (t, axis), node, space)
            if n is None:
                return c
            r = np.arange(n)
            c.link((t, axis), (y, axis), r, off + r)
            off += n
        return c


@register
class SplitRule(Rule):
    """Split: output ``k`` is ``[offset_k, offset_k + n_k)`` of the input on the split axis.

    After pruning, the split sizes are rewritten (attribute before opset 13, input after).
    """

    op_types = ("Split",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x = node.input[0]
        rank = rank_or_block(ctx, c, space, node, x)
        if rank is None:
            return c
        axis = norm_axis(attr_int(node, "axis", 0), rank)
        if space[1] != axis:
            return identity_all(c, ctx, node, space, [x, *node.output])
        off = 0
        for t in node.output:
            n = dim_or_block(ctx, c, (t, axis), node, space)
            if n is None:
                return c
            r = np.arange(n)
            c.link((x, axis), (t, axis), off + r, r)
            off += n
        return c

    def _new_sizes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> np.ndarray | None:
        x = node.input[0]
        axis = norm_axis(attr_int(node, "axis", 0), ctx.rank(x) or 0)
        if (x, axis) not in kept:
            return None
        sizes = [len(kept[(t, axis)]) if (t, axis) in kept else ctx.dim(t, axis) for t in node.output]
        return np.array(sizes, dtype=np.int64)

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        """Before opset 13 the sizes are the ``split`` attribute."""
        sizes = self._new_sizes(node, ctx, kept)
        if sizes is None or ctx.opset >= 13:
            return False
        for a in node.attribute:
            if a.name == "split":
                if list(a.ints) == sizes.tolist():
                    return False
                node.attribute.remove(a)
                break
        node.attribute.append(onnx.helper.make_attribute("split", sizes.tolist()))
        return True

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        """From opset 13 the sizes are input 1 (replacing opset 18's ``num_outputs``)."""
        sizes = self._new_sizes(node, ctx, kept)
        if sizes is None or ctx.opset < 13:
            return False
        for a in list(node.attribute):
            if a.name == "num_outputs":
                node.attribute.remove(a)
        while len(node.input) < 2:
            node.input.append("")
        if not node.input[1]:
            name = f"{node.name}__spa_split"
            out.graph.initializer.append(onnx.numpy_helper.from_array(sizes, name))
            node.input[1] = name
            return True
        return out.set_input_constant(node, 1, sizes)


def _slice_params(node: onnx.NodeProto, ctx: ModelContext) -> dict[int, tuple[int, int, int]] | None:
    """``{axis: (start, end, step)}`` (normalised, clamped) or None when not constant."""
    x = node.input[0]
    shape = ctx.shape(x)
    starts, ends = int_input(node, ctx, 1), int_input(node, ctx, 2)
    if shape is None or starts is None or ends is None:
        return None
    axes = int_input(node, ctx, 3) if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
    steps = int_input(node, ctx, 4) if len(node.input) > 4 and node.input[4] else [1] * len(starts)
    if axes is None or steps is None:
        return None
    out: dict[int, tuple[int, int, int]] = {}
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = norm_axis(a, len(shape))
        n = shape[a]
        if n is None:
            out[a] = (s, e, st)  # unknown size: only usable if this axis is not a channel axis
            continue
        out[a] = slice(s, e, st).indices(n)
    return out


@register
class SliceRule(Rule):
    """Slice (opset >= 10 form): a contiguous channel range ``[start, end)`` with step 1.

    Refuses a step other than 1 on a channel axis, and computed starts/ends/axes/steps.
    After pruning, start and end are moved to the surviving channels.
    """

    op_types = ("Slice",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        side, idx = position(node, space[0])
        if side == "in" and idx > 0:
            return c.block(space, f"{node_label(node)} input {idx} is an index parameter")
        params = _slice_params(node, ctx)
        if params is None:
            rank = ctx.rank(x)
            axes = int_input(node, ctx, 3) if len(node.input) > 3 and node.input[3] else None
            if rank is not None and axes is not None and space[1] not in [norm_axis(a, rank) for a in axes]:
                return identity_all(c, ctx, node, space, [x, y])  # e.g. positions[:, :seq]: bounds on another axis
            return c.block(space, f"{node_label(node)} starts/ends/axes/steps are not constant")
        a = space[1]
        if a not in params:
            return identity_all(c, ctx, node, space, [x, y])
        s, e, st = params[a]
        if st != 1:
            return c.block(space, f"{node_label(node)} slices axis {a} with step {st}")
        n = dim_or_block(ctx, c, (y, a), node, space)
        if n is None or ctx.dim(x, a) is None:
            return c.block(space, f"{node_label(node)} input axis {a} size unknown")
        r = np.arange(n)
        return c.link((x, a), (y, a), s + r, r)

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        x = node.input[0]
        params = _slice_params(node, ctx)
        if params is None:
            return False
        starts, ends = int_input(node, ctx, 1), int_input(node, ctx, 2)
        axes = int_input(node, ctx, 3) if len(node.input) > 3 and node.input[3] else list(range(len(starts or [])))
        assert starts is not None and ends is not None and axes is not None
        rank = ctx.rank(x) or 0
        new_s, new_e = list(starts), list(ends)
        for k, a in enumerate(axes):
            a = norm_axis(a, rank)
            if (x, a) in kept:
                s, e, _ = params[a]
                kx = kept[(x, a)]
                new_s[k] = int(np.searchsorted(kx, s))
                new_e[k] = int(np.searchsorted(kx, e))
        # Bounds computed at run time (from a shape that pruning changes) are frozen to literals.
        computed = not (ctx.is_stored(node.input[1]) and ctx.is_stored(node.input[2]))
        if new_s == starts and new_e == ends and not computed:
            return False
        changed = out.set_input_constant(node, 1, np.array(new_s, dtype=np.int64))
        return out.set_input_constant(node, 2, np.array(new_e, dtype=np.int64)) or changed
