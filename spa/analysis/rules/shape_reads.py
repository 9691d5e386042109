"""The Shape op: reading a tensor's sizes is allowed where the sizes only flow into shape sinks
(a Reshape target, an Expand, a Resize, ...) that SPA rewrites; any other reader of a channel
count blocks the group."""

from __future__ import annotations

from collections.abc import Callable

import onnx

from spa.analysis.rules.base import Coupling, Rule, norm_axis, rank_or_block, register
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


_INT_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}

_Next = list[tuple[str, set[int]]]
"""Where the followed elements of a shape vector go after one reader: ``(tensor, positions)``
pairs to follow on; empty when the reader ends the chain harmlessly."""

_SizeStep = Callable[[ModelContext, onnx.NodeProto, str, int, set[int]], "_Next | None"]
"""How one op forwards elements ``positions`` of its input ``k`` (tensor ``t``): the next
tensors, or None when it reads the size (so the group is blocked)."""


def _move(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """Unsqueeze, Squeeze, Identity, Cast, Reshape of the vector: the same positions come out."""
    return [(user.output[0], positions)] if k == 0 else None


def _gather(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """Picking elements by constant indices: the outputs that pick a followed position."""
    if k != 0:
        return None
    idx = ctx.constant_value(user.input[1])
    n = ctx.dim(t, 0)
    if idx is None or n is None:
        return None
    picked = {j for j, i in enumerate(idx.reshape(-1)) if int(i) % n in positions}
    return [(user.output[0], picked)] if picked else []


def _concat(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """Concatenation: the positions, shifted by the lengths of the pieces before input ``k``."""
    off = 0
    for piece in user.input[:k]:
        n = ctx.dim(piece, 0)
        if n is None:
            return None
        off += n
    return [(user.output[0], {p + off for p in positions})]


def _slice(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """A constant slice of the vector: where the kept followed positions land."""
    if k != 0:
        return None
    n = ctx.dim(t, 0)
    params = slice_params_values(user, ctx, n) if n is not None else None
    if params is None:
        return None
    kept = list(range(*params))
    picked = {kept.index(p) for p in positions if p in kept}
    return [(user.output[0], picked)] if picked else []


def _expand(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """Broadcasting the vector: a single element reaches every output element."""
    if k != 0:
        return None
    n_out = ctx.dim(user.output[0], 0) if ctx.rank(user.output[0]) == 1 else None
    if n_out is None:
        return None
    return [(user.output[0], set(range(n_out)) if ctx.dim(t, 0) == 1 else positions)]


def _ignores_values(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """Shape and Size of the vector read only its length."""
    return []


def _where(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """TorchScript's expand target ``Where(Equal(T, -1), 1, T)``: T's sizes pass through."""
    return [(user.output[0], positions)] if k == 2 and where_minus_one(ctx, user) == t else None


def _equal(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """``Equal(T, -1)`` for such a Where only asks "is it -1?": a pruned size never is."""
    return [] if _minus_one_test(ctx, user, t) else None


def _int_arithmetic(ctx: ModelContext, user: onnx.NodeProto, t: str, k: int, positions: set[int]) -> _Next | None:
    """Integer arithmetic on sizes (C // groups of a channel shuffle) still ends in a shape: the
    target's rule freezes or rewrites it. Every output element is followed."""
    if ctx.dtypes.get(user.output[0]) not in _INT_TYPES:
        return None
    n_out = ctx.dim(user.output[0], 0) if ctx.rank(user.output[0]) == 1 else 1
    return [(user.output[0], set(range(n_out or 1)))]


_SIZE_STEPS: dict[str, _SizeStep] = {
    **dict.fromkeys(("Unsqueeze", "Squeeze", "Identity", "Cast", "Reshape"), _move),
    "Gather": _gather, "Concat": _concat, "Slice": _slice, "Expand": _expand,
    "Shape": _ignores_values, "Size": _ignores_values, "Where": _where, "Equal": _equal,
    **dict.fromkeys(("Div", "Mul", "Add", "Sub"), _int_arithmetic),
}
"""Ops that may carry sizes on without using them, by op type (any other reader blocks)."""


def _size_readers(ctx: ModelContext, shape_out: str, pos: int) -> str | None:
    """Follow element ``pos`` of a shape vector; the first reader that is not a shape sink
    (e.g. ``Div`` computing a head width, ``Cast`` + ``Sqrt`` computing an attention scale)."""
    frontier: _Next = [(shape_out, {pos})]
    for _ in range(64):
        if not frontier:
            return None
        t, positions = frontier.pop()
        for user in ctx.consumers.get(t, []):
            k = list(user.input).index(t)
            if (user.op_type, k) in _SHAPE_SINKS:
                continue
            step = _SIZE_STEPS.get(user.op_type)
            following = None if step is None else step(ctx, user, t, k, positions)
            if following is None:
                return node_label(user)
            frontier.extend(following)
    return "a long chain of shape computations"


def _minus_one_test(ctx: ModelContext, node: onnx.NodeProto, t: str) -> bool:
    """True when ``node`` is the ``Equal(T, -1)`` whose every reader is a ``Where(., 1, T)``
    (:func:`where_minus_one`): the comparison only decides where a -1 becomes a 1."""
    users = ctx.consumers.get(node.output[0], [])
    return bool(users) and all(list(w.input).index(node.output[0]) == 0 and where_minus_one(ctx, w) == t
                               for w in users)


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
        rank = rank_or_block(ctx, c, space, node, space[0])
        if rank is None:
            return c
        lo = norm_axis(attr_int(node, "start", 0), rank)
        end = attr_int(node, "end", None)
        hi = rank if end is None else min(rank, norm_axis(end, rank))
        if not lo <= space[1] < hi:
            return c
        reader = _size_readers(ctx, node.output[0], space[1] - lo)
        if reader is not None:
            c.block(space, f"the size of axis {space[1]} of '{space[0]}' is read at run time by {reader}")
        return c
