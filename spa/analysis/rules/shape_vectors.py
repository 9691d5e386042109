"""Shape vectors: the int64 tensors a Reshape, Expand or Tile reads as its target shape, traced back
through Shape, Gather, Concat and arithmetic to symbols (an input's axis, a constant), so a rule can
tell which entry holds a channel count and rewrite it when channels are pruned."""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.base import (
    Coupling,
    KeptMap,
    RewriteSink,
    int_input,
    norm_axis,
)
from spa.model.graph import ModelContext, attr_int, node_label

Symbol = int | tuple[str, int]
"""An element of a shape vector: a literal, or ``(tensor, axis)`` meaning that tensor's size."""



_SYMBOLIC_OPS = {"Shape", "Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast", "Expand", "Concat", "Gather", "Slice",
                 "Where"}


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
        t = where_minus_one(ctx, node)
        src = shape_symbols(ctx, t, depth + 1) if t is not None else None
        return None if src is None else [1 if v == -1 else v for v in src]
    if op == "Shape":
        r = ctx.rank(node.input[0])
        if r is None:
            return None
        lo = norm_axis(attr_int(node, "start", 0), r)
        end = attr_int(node, "end", None)
        hi = r if end is None else min(r, norm_axis(end, r))
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
            idx = int_input(node, ctx, 1)
            return None if idx is None else [src[i] for i in idx]
        params = slice_params_values(node, ctx, len(src))
        return None if params is None else src[slice(*params)]
    return None


def slice_params_values(node: onnx.NodeProto, ctx: ModelContext, n: int) -> tuple[int, int, int] | None:
    starts, ends = int_input(node, ctx, 1), int_input(node, ctx, 2)
    steps = int_input(node, ctx, 4) if len(node.input) > 4 and node.input[4] else [1]
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


def shape_literal(node: onnx.NodeProto, ctx: ModelContext, b: int) -> tuple[onnx.NodeProto, int, int] | None:
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


def where_minus_one(ctx: ModelContext, node: onnx.NodeProto) -> str | None:
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
        elif (t := where_minus_one(ctx, p)) is not None:
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


def couple_target(ctx: ModelContext, c: Coupling, node: onnx.NodeProto, b: int, keep_values: tuple[int, ...]) -> None:
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
    elif sym not in keep_values and shape_literal(node, ctx, b) is None:
        c.block((y, b), f"{node_label(node)} target size of axis {b} cannot be rewritten")


def rewrite_target(node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink, keep_values: tuple[int, ...]) -> bool:
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
            continue  # coupled at run time instead (see couple_target), or shared with other readers
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
