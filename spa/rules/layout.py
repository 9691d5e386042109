"""Ops that move, join, cut or reshape tensors without computing on channel values.

Concat and Split shift channel indices by offsets; Slice selects a contiguous range; Flatten and
Reshape map one channel to a block (or a strided set) of features; Transpose, Squeeze and
Unsqueeze move axes; Pad and Resize keep the channel axis when they leave it alone.
"""

from __future__ import annotations

import numpy as np
import onnx

from spa.graph import ModelContext, Shape, Space, attr, node_label
from spa.rules.base import Coupling, KeptMap, RewriteSink, Rule, dim_or_block, position, register


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _int_input(node: onnx.NodeProto, ctx: ModelContext, i: int) -> list[int] | None:
    """Input ``i`` as a list of ints when it is a stored constant; None when absent/computed."""
    if len(node.input) <= i or not node.input[i]:
        return None
    v = ctx.constant_value(node.input[i])
    return None if v is None else [int(x) for x in v.reshape(-1)]


def _axes(node: onnx.NodeProto, ctx: ModelContext, input_index: int) -> list[int] | None:
    """``axes`` from the attribute (old opsets) or from input ``input_index`` (new opsets)."""
    a = attr(node, "axes")
    if a is not None:
        return [int(x) for x in a]  # type: ignore[union-attr]
    return _int_input(node, ctx, input_index)


def _identity_all(c: Coupling, ctx: ModelContext, node: onnx.NodeProto, space: Space, tensors: list[str]) -> Coupling:
    n = dim_or_block(ctx, c, space, node, space)
    if n is not None:
        for t in tensors:
            if t and t != space[0]:
                c.same(space, (t, space[1]), n)
    return c


@register
class ConcatRule(Rule):
    """Concat: on its axis, input ``k`` occupies ``[offset_k, offset_k + n_k)`` of the output."""

    op_types = ("Concat",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        y = node.output[0]
        rank = ctx.rank(y)
        if rank is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        axis = _norm_axis(int(attr(node, "axis", 0)), rank)  # type: ignore[arg-type]
        if space[1] != axis:
            return _identity_all(c, ctx, node, space, [*node.input, y])
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
        rank = ctx.rank(x)
        if rank is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        axis = _norm_axis(int(attr(node, "axis", 0)), rank)  # type: ignore[arg-type]
        if space[1] != axis:
            return _identity_all(c, ctx, node, space, [x, *node.output])
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
        axis = _norm_axis(int(attr(node, "axis", 0)), ctx.rank(x) or 0)  # type: ignore[arg-type]
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
    starts, ends = _int_input(node, ctx, 1), _int_input(node, ctx, 2)
    if shape is None or starts is None or ends is None:
        return None
    axes = _int_input(node, ctx, 3) if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
    steps = _int_input(node, ctx, 4) if len(node.input) > 4 and node.input[4] else [1] * len(starts)
    if axes is None or steps is None:
        return None
    out: dict[int, tuple[int, int, int]] = {}
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _norm_axis(a, len(shape))
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
            axes = _int_input(node, ctx, 3) if len(node.input) > 3 and node.input[3] else None
            if rank is not None and axes is not None and space[1] not in [_norm_axis(a, rank) for a in axes]:
                return _identity_all(c, ctx, node, space, [x, y])  # e.g. positions[:, :seq]: bounds on another axis
            return c.block(space, f"{node_label(node)} starts/ends/axes/steps are not constant")
        a = space[1]
        if a not in params:
            return _identity_all(c, ctx, node, space, [x, y])
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
        starts, ends = _int_input(node, ctx, 1), _int_input(node, ctx, 2)
        axes = _int_input(node, ctx, 3) if len(node.input) > 3 and node.input[3] else list(range(len(starts or [])))
        assert starts is not None and ends is not None and axes is not None
        rank = ctx.rank(x) or 0
        new_s, new_e = list(starts), list(ends)
        for k, a in enumerate(axes):
            a = _norm_axis(a, rank)
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


def _segments(si: Shape, so: Shape) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input axes with runs of output axes whose sizes multiply to the same number.

    Unknown sizes are allowed only where both shapes have one at the same run boundary (a
    dynamic batch axis). Returns None when the shapes cannot be paired.
    """
    segs: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(si) and j < len(so):
        if si[i] is None or so[j] is None:
            if si[i] is None and so[j] is None:
                segs.append(([i], [j]))
                i, j = i + 1, j + 1
                continue
            return None
        ii, jj = [i], [j]
        pi, pj = int(si[i]), int(so[j])  # type: ignore[arg-type]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i >= len(si) or si[i] is None:
                    return None
                pi *= int(si[i])  # type: ignore[arg-type]
                ii.append(i)
                i += 1
            else:
                if j >= len(so) or so[j] is None:
                    return None
                pj *= int(so[j])  # type: ignore[arg-type]
                jj.append(j)
                j += 1
        segs.append((ii, jj))
    for k in range(i, len(si)):
        if si[k] != 1 or not segs:
            return None
        segs[-1][0].append(k)
    for k in range(j, len(so)):
        if so[k] != 1 or not segs:
            return None
        segs[-1][1].append(k)
    return segs


VAxis = tuple[Space, int]
"""An axis of a reshape segment and its size (for a folded ``B·H`` axis, ``H``)."""


def _virtual_axes(ctx: ModelContext, node: onnx.NodeProto, ii: list[int], jj: list[int]
                  ) -> tuple[list[VAxis], list[VAxis], list[VAxis]] | str:
    """The known axes of a segment on each side, with a dynamic leading axis that absorbs
    channels (``B·H``) turned into a folded axis of ``H``; plus dynamic axes paired one to one.

    Returns ``(ins, outs, paired)`` or a reason the segment cannot be followed.
    """
    x, y = node.input[0], node.output[0]
    sx, sy = ctx.shape(x), ctx.shape(y)
    assert sx is not None and sy is not None
    dyn_in = [i for i in ii if sx[i] is None]
    dyn_out = [j for j in jj if sy[j] is None]
    ins: list[VAxis] = [((x, i), int(sx[i])) for i in ii if sx[i] not in (None, 1)]  # type: ignore[arg-type]
    outs: list[VAxis] = [((y, j), int(sy[j])) for j in jj if sy[j] not in (None, 1)]  # type: ignore[arg-type]
    if not dyn_in and not dyn_out:
        return ins, outs, []
    if len(dyn_in) != 1 or len(dyn_out) != 1 or dyn_in[0] != ii[0] or dyn_out[0] != jj[0]:
        return "dynamic sizes in the middle of merged axes"
    p_in = int(np.prod([n for _, n in ins], dtype=np.int64))
    p_out = int(np.prod([n for _, n in outs], dtype=np.int64))
    if p_in == p_out:
        return ins, outs, [(x, dyn_in[0]), (y, dyn_out[0])]
    if p_in % p_out == 0:
        return ins, [((y, dyn_out[0]), p_in // p_out), *outs], []
    if p_out % p_in == 0:
        return [((x, dyn_in[0]), p_out // p_in), *ins], outs, []
    return "a dynamic axis absorbs part of a channel axis"


def _merge_map(ctx: ModelContext, node: onnx.NodeProto, c: Coupling, space: Space, segs: list[tuple[list[int], list[int]]]) -> Coupling:
    """Couple ``space`` through a reshape described by ``segs``."""
    x = node.input[0]
    is_in = space[0] == x and position(node, space[0])[0] == "in"
    for ii, jj in segs:
        if space[1] not in (ii if is_in else jj):
            continue
        v = _virtual_axes(ctx, node, ii, jj)
        if isinstance(v, str):
            return c.block(space, f"{node_label(node)}: {v}")
        ins, outs, paired = v
        if space in paired:
            n = ctx.dim(*space)
            if n is None:
                return c.block(space, f"size of '{space[0]}' axis {space[1]} is unknown at {node_label(node)}")
            return c.same(space, paired[1 - paired.index(space)], n)
        for s, n in ins + outs:
            if ctx.dim(*s) is None:
                ctx.fold_dims[s] = n  # a dynamic axis that carries n channels (see ModelContext.fold_dims)
        mine = ins if is_in else outs
        if space not in [s for s, _ in mine]:
            return c.block(space, f"{node_label(node)} cannot map axis {space[1]} of '{space[0]}'")
        if len(ins) <= 1 and len(outs) <= 1:
            if ins and outs:
                c.same(ins[0][0], outs[0][0], ins[0][1])
            return c
        if len(outs) == 1 and is_in:
            # Several input axes merge into one output axis: channel -> (strided) feature set.
            digits = np.indices([n for _, n in ins]).reshape(len(ins), -1)[[s for s, _ in ins].index(space)]
            return c.link(space, outs[0][0], digits, np.arange(digits.size))
        if len(outs) == 1:
            # Asked from the merged output: which input axis holds the channels is known only
            # from the other side, so this is fine only if that side is in the same group.
            return c.block(
                space,
                f"{node_label(node)} merges axes {[s[1] for s, _ in ins]} of '{x}'; reached from its output only",
                unless=tuple(s for s, _ in ins),
            )
        if len(ins) == 1:
            from spa.rules.attention import couple_split

            return couple_split(ctx, node, c, space, ins[0], outs)
        if _regroups(space, ins, outs):
            return _link_outer(c, ins[0], outs[0])
        return c.block(space, f"{node_label(node)} reshapes axes {[s[1] for s, _ in ins]} of '{x}' "
                              f"into axes {[s[1] for s, _ in outs]}")
    return c.block(space, f"{node_label(node)} cannot map axis {space[1]} of '{space[0]}'")


def _regroups(space: Space, ins: list[VAxis], outs: list[VAxis]) -> bool:
    """Whether ``space`` is the outermost axis of a segment whose outermost axes on both sides
    nest: GroupNorm's ``(N, C, H, W) -> (N, G, C/G·H·W)`` and back, where output index ``g``
    holds exactly input channels ``g·C/G .. (g+1)·C/G - 1`` (row-major order)."""
    if space not in (ins[0][0], outs[0][0]):
        return False
    a, b = ins[0][1], outs[0][1]
    return min(a, b) >= 2 and max(a, b) % min(a, b) == 0 and not any(s == space for s, _ in ins[1:] + outs[1:])


def _link_outer(c: Coupling, a: VAxis, b: VAxis) -> Coupling:
    """Couple two nested outermost axes: index ``i`` of the larger is index ``i // f`` of the
    smaller, ``f`` the ratio of their sizes. A unit is then one whole index of the smaller axis
    (one normalisation group), so the statistics of the groups that stay are unchanged."""
    (big, nb), (small, ns) = (a, b) if a[1] >= b[1] else (b, a)
    r = np.arange(nb, dtype=np.int64)
    return c.link(big, small, r, r // (nb // ns))


def _sample_segments(ctx: ModelContext, x: str, y: str) -> list[tuple[list[int], list[int]]] | None:
    """Pair a Reshape's axes from the concrete shapes of the probe runs (dynamic sizes).

    The segments come from the larger run and must also hold, product for product, in the
    smaller one (where a batch of 1 could pair axes by coincidence)."""
    shapes = []
    for t in (x, y):
        static = ctx.shape(t)
        if t in ctx.sample_shapes:
            shapes.append(ctx.sample_shapes[t])
        elif static is not None and None not in static:
            shapes.append((static, static))
        else:
            return None
    (in0, in1), (out0, out1) = shapes
    segs = _segments(in1, out1)
    if segs is None:
        return None
    for ii, jj in segs:
        if int(np.prod([in0[i] for i in ii])) != int(np.prod([out0[j] for j in jj])):
            return None
    return segs


@register
class FlattenRule(Rule):
    """Flatten(axis=k): axes ``[0, k)`` merge into output axis 0, ``[k, r)`` into axis 1."""

    op_types = ("Flatten",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        sx = ctx.shape(node.input[0])
        if sx is None:
            return c.block(space, f"{node_label(node)} input shape unknown")
        k = _norm_axis(int(attr(node, "axis", 1)), len(sx))  # type: ignore[arg-type]
        segs = [(list(range(0, k)), [0]), (list(range(k, len(sx))), [1])]
        if any(sx[i] is None for i in range(k, len(sx))):
            return c.block(space, f"{node_label(node)} flattened sizes unknown")
        return _merge_map(ctx, node, c, space, [s for s in segs if s[0]])


_SYMBOLIC_OPS = {"Shape", "Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast", "Expand", "Concat", "Gather", "Slice",
                 "Where"}

Symbol = int | tuple[str, int]
"""An element of a shape vector: a literal, or ``(tensor, axis)`` meaning that tensor's size."""


def shape_symbols(ctx: ModelContext, name: str, depth: int = 0) -> list[Symbol] | None:
    """Evaluate a 1-D integer shape tensor symbolically, or None when it cannot be followed.

    Follows Shape (with start/end), stored constants, Gather/Slice with constant indices,
    Concat, and the shape-preserving Unsqueeze/Squeeze/Reshape/Identity/Cast/Expand.
    """
    if depth > 32:
        return None
    node = ctx.producer.get(name)
    if ctx.is_stored(name) or node is None or node.op_type not in _SYMBOLIC_OPS:
        # A literal (stored, or folded from constants); sizes read from tensors stay symbolic.
        v = ctx.constant_value(name)
        return [int(x) for x in v.reshape(-1)] if v is not None and v.dtype.kind in "iu" else None
    op = node.op_type
    if op == "Where":
        t = _where_minus_one(ctx, node)
        src = shape_symbols(ctx, t, depth + 1) if t is not None else None
        return None if src is None else [1 if v == -1 else v for v in src]
    if op == "Shape":
        r = ctx.rank(node.input[0])
        if r is None:
            return None
        lo = _norm_axis(int(attr(node, "start", 0)), r)  # type: ignore[arg-type]
        end = attr(node, "end")
        hi = r if end is None else min(r, _norm_axis(int(end), r))  # type: ignore[arg-type]
        return [(node.input[0], k) for k in range(max(0, lo), hi)]
    if op in ("Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast", "Expand"):
        return shape_symbols(ctx, node.input[0], depth + 1)
    if op == "Concat":
        out: list[Symbol] = []
        for i in node.input:
            part = shape_symbols(ctx, i, depth + 1)
            if part is None:
                return None
            out += part
        return out
    if op in ("Gather", "Slice"):
        src = shape_symbols(ctx, node.input[0], depth + 1)
        if src is None:
            return None
        if op == "Gather":
            idx = _int_input(node, ctx, 1)
            return None if idx is None else [src[i] for i in idx]
        params = _slice_params_values(node, ctx, len(src))
        return None if params is None else src[slice(*params)]
    return None


def _slice_params_values(node: onnx.NodeProto, ctx: ModelContext, n: int) -> tuple[int, int, int] | None:
    starts, ends = _int_input(node, ctx, 1), _int_input(node, ctx, 2)
    steps = _int_input(node, ctx, 4) if len(node.input) > 4 and node.input[4] else [1]
    if starts is None or ends is None or steps is None or len(starts) != 1:
        return None
    return slice(starts[0], ends[0], steps[0]).indices(n)


def _target_piece(node: onnx.NodeProto, ctx: ModelContext, b: int) -> tuple[onnx.NodeProto, int, int] | None:
    """Where the target-shape value for output axis ``b`` comes from: ``(owner, input, offset)``.

    ``owner`` is ``node`` itself when the whole target is one stored or folded literal, else
    the ``Concat`` that builds the target and the index of the piece holding the value.
    """
    target = node.input[1]
    length, ry = ctx.dim(target, 0), ctx.rank(node.output[0])
    if length is None:
        syms = shape_symbols(ctx, target)
        length = None if syms is None else len(syms)
    if length is None or ry is None:
        return None
    b -= ry - length  # Expand's target may be shorter than its output rank
    if b < 0:
        return None
    if ctx.constant_value(target) is not None:  # stored or folded: replaced by a new initializer
        return node, 1, b
    return _concat_piece(ctx, target, b)


def _concat_piece(ctx: ModelContext, vector: str, b: int, depth: int = 0) -> tuple[onnx.NodeProto, int, int] | None:
    """The innermost Concat input holding element ``b`` of the shape vector ``vector``."""
    prod = ctx.producer.get(_shape_source(ctx, vector))
    if prod is None or prod.op_type != "Concat" or depth > 4:
        return None
    off = 0
    for k, piece in enumerate(prod.input):
        n = ctx.dim(piece, 0)
        if n is None:
            syms = shape_symbols(ctx, piece)
            n = None if syms is None else len(syms)
        if n is None or ctx.rank(piece) != 1:
            return None
        if off <= b < off + n:
            if ctx.constant_value(piece) is None and n > 1:
                inner = _concat_piece(ctx, piece, b - off, depth + 1)
                if inner is not None:
                    return inner
            return prod, k, b - off
        off += n
    return None


def _shape_literal(node: onnx.NodeProto, ctx: ModelContext, b: int) -> tuple[onnx.NodeProto, int, int] | None:
    """Where the target-shape literal for output axis ``b`` is stored: (node, input, offset)."""
    loc = _target_piece(node, ctx, b)
    if loc is None or (loc[0] is not node and ctx.constant_value(loc[0].input[loc[1]]) is None):
        return None
    return loc


def _runtime_piece(node: onnx.NodeProto, ctx: ModelContext, b: int) -> tuple[onnx.NodeProto, int] | None:
    """A one-element Concat piece computed at run time for output axis ``b``: ``(concat, input)``.

    Such a piece can be *frozen*: replaced by a literal when the size it reads is static."""
    loc = _target_piece(node, ctx, b)
    if loc is None or loc[0] is node or ctx.constant_value(loc[0].input[loc[1]]) is not None:
        return None
    return (loc[0], loc[1]) if ctx.dim(loc[0].input[loc[1]], 0) == 1 else None


_SCALAR_MOVES = ("Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast")


def _where_minus_one(ctx: ModelContext, node: onnx.NodeProto) -> str | None:
    """``Where(Equal(T, -1), ones, T)`` (TorchScript's ``expand(..., -1, ...)``): returns T."""
    if node.op_type != "Where" or len(node.input) != 3:
        return None
    cond = ctx.producer.get(node.input[0])
    t = node.input[2]
    if cond is None or cond.op_type != "Equal" or t not in cond.input:
        return None
    minus = ctx.constant_value(cond.input[1 - list(cond.input).index(t)])
    ones = ctx.constant_value(node.input[1])
    if minus is None or ones is None or not (minus == -1).all() or not (ones == 1).all():
        return None
    return t


def _shape_source(ctx: ModelContext, name: str) -> str:
    """Follow a shape vector back through value-preserving steps (flattening Reshape, Cast,
    Identity, the Where that maps -1 to 1) to where it is built."""
    for _ in range(8):
        p = ctx.producer.get(name)
        if p is None:
            return name
        if p.op_type in ("Cast", "Identity") or (p.op_type == "Reshape" and ctx.rank(p.input[0]) == 1):
            name = p.input[0]
        elif (t := _where_minus_one(ctx, p)) is not None:
            name = t
        else:
            return name
    return name


def _freezable(node: onnx.NodeProto, ctx: ModelContext, b: int) -> bool:
    """True when the target value for axis ``b`` can be replaced by a literal: the whole
    target folds to constants, or the value sits in a foldable or one-element Concat piece."""
    loc = _target_piece(node, ctx, b)
    if loc is None:
        return False
    if loc[0] is node:
        return True
    piece = loc[0].input[loc[1]]
    if not _exclusive(ctx, node.input[1], loc[0]):
        return False  # a shape vector shared with other nodes, which may need other values
    return ctx.constant_value(piece) is not None or ctx.dim(piece, 0) == 1


def _exclusive(ctx: ModelContext, vector: str, owner: onnx.NodeProto) -> bool:
    """True when every tensor from ``owner``'s output down to ``vector`` has one reader."""
    t = owner.output[0]
    for _ in range(12):
        if len(ctx.consumers.get(t, [])) != 1:
            return False
        if t == vector:
            return True
        t = ctx.consumers[t][0].output[0]
    return False


def _scaled_piece(node: onnx.NodeProto, ctx: ModelContext, b: int) -> tuple[onnx.NodeProto, int, int] | None:
    """For a folded ``B·H`` axis: the ``Mul(dynamic size, H)`` that computes its target value.

    Returns ``(mul, constant input, H)`` when the piece for axis ``b`` is a run-time size times a
    literal (through Unsqueeze/Reshape/Cast), else None.
    """
    loc = _runtime_piece(node, ctx, b)
    if loc is None:
        return None
    t = loc[0].input[loc[1]]
    for _ in range(4):
        p = ctx.producer.get(t)
        if p is None:
            return None
        if p.op_type == "Mul":
            for k in (0, 1):
                v = ctx.constant_value(p.input[k])
                if v is not None and v.size == 1 and v.dtype.kind in "iu" and ctx.constant_value(p.input[1 - k]) is None:
                    return p, k, int(v.reshape(-1)[0])
            return None
        if p.op_type not in _SCALAR_MOVES:
            return None
        t = p.input[0]
    return None


@register
class ReshapeRule(Rule):
    """Reshape between statically known shapes (a dynamic batch axis is fine).

    Merging axes maps one channel to a block of features; splitting a channel axis into several
    (attention heads) is refused here. The target shape is rewritten after pruning; refuses when
    the target value for a pruned axis is computed at run time.
    """

    op_types = ("Reshape",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        if position(node, space[0]) == ("in", 1):
            return c.block(space, f"{node_label(node)} shape input is not data")
        from spa.rules.shuffle import couple_shuffle, find_shuffle

        shuffle = find_shuffle(ctx, node)
        if shuffle is not None:
            return couple_shuffle(ctx, node, shuffle, space)
        sx, sy = ctx.shape(x), ctx.shape(y)
        if sx is None or sy is None:
            return c.block(space, f"{node_label(node)} input or output shape unknown")
        segs = _segments(sx, sy) if None not in sx[1:] and None not in sy[1:] else None
        if segs is None:
            segs = _sample_segments(ctx, x, y) or _segments(sx, sy)
        if segs is None:
            return c.block(space, f"{node_label(node)} shapes {sx} -> {sy} cannot be paired")
        c = _merge_map(ctx, node, c, space, segs)
        for b in {e.b[1] if e.b[0] == y else e.a[1] for e in c.edges}:
            _couple_target(ctx, c, node, b, keep_values=(0, -1))
        return c

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        from spa.rules.shuffle import find_shuffle, rewrite_shuffle

        shuffle = find_shuffle(ctx, node)
        if shuffle is not None:
            return rewrite_shuffle(ctx, shuffle, node, kept, out)
        return _rewrite_target(node, ctx, kept, out, keep_values=(0, -1))


_UNKNOWN = object()


def _element_symbol(ctx: ModelContext, node: onnx.NodeProto, b: int) -> Symbol | None | object:
    """The target-shape value for output axis ``b``: a literal, a ``(tensor, axis)`` size, None
    when the target is shorter than the output (Expand: the axis comes from the input), or
    ``_UNKNOWN``. Evaluated on the whole target, else on the Concat piece holding it."""
    ry = ctx.rank(node.output[0])
    if ry is None:
        return _UNKNOWN
    syms = shape_symbols(ctx, node.input[1])
    if syms is not None:
        k = b - (ry - len(syms))
        return syms[k] if k >= 0 else None
    loc = _target_piece(node, ctx, b)
    if loc is None or loc[0] is node:
        return _UNKNOWN
    part = shape_symbols(ctx, loc[0].input[loc[1]])
    return _UNKNOWN if part is None or loc[2] >= len(part) else part[loc[2]]


def _couple_target(ctx: ModelContext, c: Coupling, node: onnx.NodeProto, b: int, keep_values: tuple[int, ...]) -> None:
    """Make sure the target-shape value (input 1) for output axis ``b`` follows pruning.

    A literal must be stored where it can be rewritten (unless it is one of ``keep_values``,
    such as Reshape's -1). A size read at run time from another tensor is frozen to a literal
    when it is static and sits in its own Concat piece; otherwise that tensor's axis is coupled
    to output axis ``b``. A folded ``B·H`` axis may be computed as ``B * H`` (the H is rewritten).
    """
    y = node.output[0]
    sym = _element_symbol(ctx, node, b)
    if ctx.is_folded((y, b)):
        sp = _scaled_piece(node, ctx, b)
        if (sp is not None and sp[2] == ctx.fold_dims[(y, b)]) or sym in keep_values:
            return
        c.block((y, b), f"{node_label(node)} target size of axis {b} (batch x {ctx.fold_dims[(y, b)]}) "
                        "cannot be rewritten")
        return
    if sym is _UNKNOWN:
        c.block((y, b), f"{node_label(node)} target size of axis {b} is computed at run time")
        return
    if sym is None:
        return  # Expand: this axis comes from the input alone
    if isinstance(sym, tuple):
        n = ctx.dim(y, b)
        if n is None or ctx.dim(*sym) != n:
            c.block((y, b), f"{node_label(node)} target size of axis {b} comes from '{sym[0]}' of another size")
        elif not _freezable(node, ctx, b):
            c.same(sym, (y, b), n)
        # else: a static size read at run time; frozen to the new literal when rewritten
    elif sym not in keep_values and _shape_literal(node, ctx, b) is None:
        c.block((y, b), f"{node_label(node)} target size of axis {b} cannot be rewritten")


def _rewrite_target(node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink, keep_values: tuple[int, ...]) -> bool:
    """Write the new size of every pruned output axis into the target-shape literal; freeze
    static sizes read at run time; rescale the ``H`` of folded ``B·H`` axes."""
    y = node.output[0]
    changed = False
    ry = ctx.rank(y) or 0
    for b in range(ry):
        if ctx.is_folded((y, b)):
            sp = _scaled_piece(node, ctx, b) if (y, b) in kept else None
            if sp is not None:
                mul, k, _ = sp
                old = ctx.constant_value(mul.input[k])
                assert old is not None
                value = np.full(old.shape, len(kept[(y, b)]), dtype=old.dtype)
                changed = out.set_input_constant(mul, k, value) or changed
            continue
        loc = _target_piece(node, ctx, b)
        if loc is None:
            continue
        owner, idx, off = loc
        piece = owner.input[idx]
        computed = not ctx.is_stored(piece)  # read or derived from shapes at run time
        if (y, b) not in kept and not computed:
            continue
        sym = _element_symbol(ctx, node, b)
        folded = ctx.constant_value(piece)
        if folded is None and isinstance(sym, tuple) and ctx.dim(*sym) is not None and ctx.dim(piece, 0) == 1:
            folded = np.array([ctx.dim(*sym)], dtype=np.int64)  # one element read from a static size
        if folded is None or (computed and (y, b) not in kept and not _freezable(node, ctx, b)):
            continue  # coupled at run time instead (see _couple_target), or shared with other readers
        original = np.array(folded, dtype=np.int64).reshape(-1)
        if original[off] in keep_values and not computed:
            continue
        current = out.current(owner, idx)
        value = (np.array(current, dtype=np.int64).reshape(-1) if current is not None else original).copy()
        # A static size computed at run time is frozen, so it cannot follow a pruned tensor it reads.
        n = len(kept[(y, b)]) if (y, b) in kept else int(original[off])
        if value[off] != n or current is None:
            value[off] = n
            if ctx.dtypes.get(owner.input[idx]) == onnx.TensorProto.INT32:
                value = value.astype(np.int32)  # tf2onnx: Cast(Concat(int32 pieces)); a literal must match
            changed = out.set_input_constant(owner, idx, value) or changed
    return changed


@register
class TransposeRule(Rule):
    """Transpose: output axis ``b`` is input axis ``perm[b]``."""

    op_types = ("Transpose",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        rank = ctx.rank(x)
        if rank is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        perm = [int(p) for p in attr(node, "perm", list(range(rank))[::-1])]  # type: ignore[union-attr]
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
        rx, ry = ctx.rank(x), ctx.rank(y)
        if rx is None or ry is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        if position(node, space[0]) == ("in", 1):
            return c.block(space, f"{node_label(node)} axes input is not data")
        big, small, rbig = (x, y, rx) if node.op_type == "Squeeze" else (y, x, ry)
        axes = _axes(node, ctx, 1)
        if axes is None:
            sb = ctx.shape(big)
            if node.op_type == "Unsqueeze" or sb is None:
                return c.block(space, f"{node_label(node)} axes unknown")
            axes = [i for i, d in enumerate(sb) if d == 1]
        axes = [_norm_axis(a, rbig) for a in axes]
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
        pads = attr(node, "pads")
        pads = [int(p) for p in pads] if pads is not None else _int_input(node, ctx, 1)  # type: ignore[union-attr]
        if rank is None or pads is None:
            return c.block(space, f"{node_label(node)} pads are not constant")
        axes = _int_input(node, ctx, 3) if len(node.input) > 3 and node.input[3] else list(range(rank))
        if axes is None:
            return c.block(space, f"{node_label(node)} axes are not constant")
        axes = [_norm_axis(a, rank) for a in axes]
        k = len(axes)
        if space[1] in axes:
            j = axes.index(space[1])
            if pads[j] or pads[j + k]:
                return c.block(space, f"{node_label(node)} pads axis {space[1]}")
        return _identity_all(c, ctx, node, space, [x, y])


@register
class ResizeRule(Rule):
    """Resize / Upsample with scale 1 on the channel axis; ``sizes`` is rewritten after pruning."""

    op_types = ("Resize", "Upsample")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        if position(node, space[0])[0] == "in" and space[0] != x:
            return c.block(space, f"{node_label(node)} roi/scales/sizes input is not data")
        if attr(node, "axes") is not None:
            return c.block(space, f"{node_label(node)} uses the axes attribute")
        if ctx.dim(x, space[1]) != ctx.dim(y, space[1]):
            return c.block(space, f"{node_label(node)} resizes axis {space[1]}")
        sizes_idx = 3 if node.op_type == "Resize" else None
        if sizes_idx is not None and len(node.input) > sizes_idx and node.input[sizes_idx]:
            if _int_input(node, ctx, sizes_idx) is None and not _reads_own_size(ctx, node, space[1]):
                return c.block(space, f"{node_label(node)} sizes are computed at run time")
        return _identity_all(c, ctx, node, space, [x, y])

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        """A literal ``sizes`` gets the kept counts; sizes computed at run time read them (see couple)."""
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            return False
        sizes = _int_input(node, ctx, 3)
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


def _reads_own_size(ctx: ModelContext, node: onnx.NodeProto, axis: int) -> bool:
    """Whether run-time ``sizes`` of a Resize take ``axis`` from the resized tensor's own shape
    (TorchScript's ``interpolate(x, size=...)``: ``Concat(Shape(x)[:2], size)``), so a pruned
    channel count reaches them by itself."""
    syms = shape_symbols(ctx, node.input[3])
    return syms is not None and axis < len(syms) and syms[axis] == (node.input[0], axis)


#: Inputs that take a shape vector whose values the rules of those ops follow or rewrite.
_SHAPE_SINKS = {("Reshape", 1), ("Expand", 1), ("Resize", 3), ("Tile", 1), ("ConstantOfShape", 0),
                ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4)}
_SHAPE_MOVES = ("Unsqueeze", "Squeeze", "Identity", "Cast", "Reshape")


def _size_readers(ctx: ModelContext, shape_out: str, pos: int) -> str | None:
    """Follow element ``pos`` of a shape vector; the first reader that is not a shape sink
    (e.g. ``Div`` computing a head width, ``Cast`` + ``Sqrt`` computing an attention scale)."""
    frontier: list[tuple[str, set[int]]] = [(shape_out, {pos})]
    for _ in range(64):
        if not frontier:
            return None
        t, positions = frontier.pop()
        for user in ctx.consumers.get(t, []):
            k = list(user.input).index(t)
            if (user.op_type, k) in _SHAPE_SINKS:
                continue
            op = user.op_type
            if op in _SHAPE_MOVES and k == 0:
                frontier.append((user.output[0], positions))
            elif op == "Gather" and k == 0:
                idx = ctx.constant_value(user.input[1])
                n = ctx.dim(t, 0)
                if idx is None or n is None:
                    return node_label(user)
                picked = {j for j, i in enumerate(idx.reshape(-1)) if int(i) % n in positions}
                if picked:
                    frontier.append((user.output[0], picked))
            elif op == "Concat":
                off = 0
                for piece in user.input[:k]:
                    n = ctx.dim(piece, 0)
                    if n is None:
                        return node_label(user)
                    off += n
                frontier.append((user.output[0], {p + off for p in positions}))
            elif op == "Slice" and k == 0:
                n = ctx.dim(t, 0)
                params = _slice_params_values(user, ctx, n) if n is not None else None
                if params is None:
                    return node_label(user)
                kept = list(range(*params))
                picked = {kept.index(p) for p in positions if p in kept}
                if picked:
                    frontier.append((user.output[0], picked))
            elif op == "Expand" and k == 0:
                n_out = ctx.dim(user.output[0], 0) if ctx.rank(user.output[0]) == 1 else None
                if n_out is None:
                    return node_label(user)
                frontier.append((user.output[0], set(range(n_out)) if ctx.dim(t, 0) == 1 else positions))
            elif op in ("Shape", "Size"):
                continue
            elif op == "Where" and k == 2 and _where_minus_one(ctx, user) == t:
                # TorchScript's expand target Where(Equal(T, -1), 1, T): T's sizes pass through
                frontier.append((user.output[0], positions))
            elif op == "Equal" and _minus_one_test(ctx, user, t):
                continue  # only asks "is it -1?" for such a Where: a pruned size never is
            elif op in ("Div", "Mul", "Add", "Sub") and ctx.dtypes.get(user.output[0]) in _INT_TYPES:
                # Integer arithmetic on sizes (C // groups of a channel shuffle) still ends in a
                # shape: the target's rule freezes or rewrites it.
                n_out = ctx.dim(user.output[0], 0) if ctx.rank(user.output[0]) == 1 else 1
                frontier.append((user.output[0], set(range(n_out or 1))))
            else:
                return node_label(user)
    return "a long chain of shape computations"


def _minus_one_test(ctx: ModelContext, node: onnx.NodeProto, t: str) -> bool:
    """True when ``node`` is the ``Equal(T, -1)`` whose every reader is a ``Where(., 1, T)``
    (:func:`_where_minus_one`): the comparison only decides where a -1 becomes a 1."""
    users = ctx.consumers.get(node.output[0], [])
    return bool(users) and all(list(w.input).index(node.output[0]) == 0 and _where_minus_one(ctx, w) == t
                               for w in users)


_INT_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


@register
class ShapeRule(Rule):
    """Shape and Size read sizes at run time, so they adapt to pruning.

    A size that flows into a Reshape/Expand target, Resize sizes, Slice bounds or
    ConstantOfShape is followed (or frozen) by those ops' rules. A pruned axis whose size is read
    into arithmetic (a head width ``E // heads``, an attention scale ``1/sqrt(d)``) would
    silently change the computation, so that group is blocked.
    """

    op_types = ("Shape", "Size")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        if node.op_type == "Size":
            return c.block(space, f"{node_label(node)} reads the element count of '{space[0]}'")
        rank = ctx.rank(space[0])
        if rank is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        lo = _norm_axis(int(attr(node, "start", 0)), rank)  # type: ignore[arg-type]
        end = attr(node, "end")
        hi = rank if end is None else min(rank, _norm_axis(int(end), rank))  # type: ignore[arg-type]
        if not lo <= space[1] < hi:
            return c
        reader = _size_readers(ctx, node.output[0], space[1] - lo)
        if reader is not None:
            c.block(space, f"the size of axis {space[1]} of '{space[0]}' is read at run time by {reader}")
        return c


@register
class SoftmaxRule(Rule):
    """Softmax-like ops keep every axis they do not normalise over."""

    op_types = ("Softmax", "LogSoftmax", "Hardmax")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        rank = ctx.rank(node.input[0])
        if rank is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        axis = _norm_axis(int(attr(node, "axis", -1 if ctx.opset >= 13 else 1)), rank)  # type: ignore[arg-type]
        normalised = space[1] == axis if ctx.opset >= 13 else space[1] >= axis
        if normalised:
            return c.block(space, f"{node_label(node)} normalises over axis {space[1]} of '{space[0]}'")
        return _identity_all(c, ctx, node, space, [node.input[0], node.output[0]])


@register
class GatherRule(Rule):
    """Gather keeps every data axis except the gathered one (embedding tables included)."""

    op_types = ("Gather",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        data, idx, y = node.input[0], node.input[1], node.output[0]
        rd, ri = ctx.rank(data), ctx.rank(idx)
        if rd is None or ri is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        axis = _norm_axis(int(attr(node, "axis", 0)), rd)  # type: ignore[arg-type]
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
        reps = _int_input(node, ctx, 1) or shape_symbols(ctx, node.input[1])
        if position(node, space[0]) == ("in", 1) or reps is None or reps[space[1]] != 1:
            return c.block(space, f"{node_label(node)} repeats axis {space[1]} or repeats unknown")
        return _identity_all(c, ctx, node, space, [node.input[0], node.output[0]])


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
        rx, ry = ctx.rank(x), ctx.rank(y)
        if rx is None or ry is None:
            return c.block(space, f"rank unknown at {node_label(node)}")
        b = space[1] + (ry - rx) if space[0] == x else space[1]
        n = dim_or_block(ctx, c, (y, b), node, space)
        if n is None:
            return c
        ax = b - (ry - rx)
        if ax >= 0 and ctx.dim(x, ax) == n and (n != 1):
            c.same((x, ax), (y, b), n)
        _couple_target(ctx, c, node, b, keep_values=(1,))
        return c

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        return _rewrite_target(node, ctx, kept, out, keep_values=(1,))
