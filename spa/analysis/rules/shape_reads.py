"""The Shape op: reading a tensor's sizes is allowed where the sizes only flow into shape sinks
(a Reshape target, an Expand, a Resize, ...) that SPA rewrites; any other reader of a channel
count blocks the group."""

from __future__ import annotations

import onnx

from spa.analysis.rules.base import Coupling, Rule, norm_axis, register
from spa.analysis.rules.shape_vectors import shape_symbols, slice_params_values, where_minus_one
from spa.model.graph import ModelContext, Space, attr_int, node_label


def reads_own_size(ctx: ModelContext, node: onnx.NodeProto, axis: int) -> bool:
    """Whether run-time ``sizes`` of a Resize take ``axis`` from the resized tensor's own shape
    (TorchScript's ``interpolate(x, size=...)``: ``Concat(Shape(x)[:2], size)``), so a pruned
    channel count reaches them by itself."""
    syms = shape_symbols(ctx, node.input[3])
    return syms is not None and axis < len(syms) and syms[axis] == (node.input[0], axis)


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
                params = slice_params_values(user, ctx, n) if n is not None else None
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
            elif op == "Where" and k == 2 and where_minus_one(ctx, user) == t:
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
    (:func:`where_minus_one`): the comparison only decides where a -1 becomes a 1."""
    users = ctx.consumers.get(node.output[0], [])
    return bool(users) and all(list(w.input).index(node.output[0]) == 0 and where_minus_one(ctx, w) == t
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
        lo = norm_axis(attr_int(node, "start", 0), rank)
        end = attr_int(node, "end", None)
        hi = rank if end is None else min(rank, norm_axis(end, rank))
        if not lo <= space[1] < hi:
            return c
        reader = _size_readers(ctx, node.output[0], space[1] - lo)
        if reader is not None:
            c.block(space, f"the size of axis {space[1]} of '{space[0]}' is read at run time by {reader}")
        return c
