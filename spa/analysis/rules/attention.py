"""Attention: a hidden axis split into heads by a Reshape, and products of two activations.

**Splitting reshapes.** ``Reshape (B, S, H·D) -> (B, S, H, D)`` splits one channel axis into
several. Channel ``c`` is the multi-index ``(h, d)``; the group follows *one* of the split
axes, chosen by the head granularity (``ModelContext.head_mode``, ``spa prune --prune-heads``):

- ``whole`` (default): the outermost axis, so a unit is a whole head (all ``D`` channels of
  head ``h``); the head count in the Reshape target is rewritten and the head width is kept.
- ``dims``: the innermost axis, so a unit is one dimension ``d`` removed from every head; the
  head width is rewritten and the head count is kept.
- ``none``: the group is blocked (attention widths are left alone).

A split axis that is only used to *select* slices (the ``3`` of a packed QKV projection reshaped
to ``(3, E)`` and then indexed with ``proj[0]``, ``proj[1]``, ``proj[2]``) is structure, not
channels: it is never chosen, so a unit spans the same channel of Q, K and V. An axis reached
from elsewhere that is not the chosen one is linked too, which merges units (safe, and visible
as a group with fewer units).

**Batched MatMul** ``A @ B`` of two activations (attention scores ``Q Kᵀ`` and context
``P V``): leading axes broadcast like Add (a head axis couples Q, K, V and the output), the
contraction axis couples ``A[..., k]`` with ``B[..., k, :]``, rows follow A and columns follow B.
"""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.base import Coupling, dim_or_block, position, ranks_or_block
from spa.model.graph import ModelContext, Space, attr_int, attr_ints, node_label

HEAD_MODES = ("whole", "dims", "none")
_PASS_THROUGH = ("Identity", "Cast")
_MAX_TRACE = 16


def _next_axis(ctx: ModelContext, node: onnx.NodeProto, tensor: str, axis: int) -> Space | None:
    """Where ``axis`` of ``tensor`` goes through a pure layout op (Transpose, (Un)Squeeze, Identity)."""
    op = node.op_type
    y = node.output[0] if node.output else ""
    if op in _PASS_THROUGH:
        return (y, axis)
    if op == "Transpose":
        rank = ctx.rank(tensor)
        if rank is None:
            return None
        perm = attr_ints(node, "perm")
        if perm is None:
            perm = list(range(rank))[::-1]
        return (y, perm.index(axis))
    if op in ("Squeeze", "Unsqueeze"):
        rx, ry = ctx.rank(tensor), ctx.rank(y)
        axes = _const_axes(node, ctx)
        if rx is None or ry is None or axes is None:
            return None
        if op == "Squeeze":
            axes = [a % rx for a in axes]
            return None if axis in axes else (y, axis - sum(a < axis for a in axes))
        axes = sorted(a % ry for a in axes)
        remaining = [i for i in range(ry) if i not in axes]
        return (y, remaining[axis])
    return None


def _const_axes(node: onnx.NodeProto, ctx: ModelContext) -> list[int] | None:
    axes = attr_ints(node, "axes")
    if axes is not None:
        return axes
    if len(node.input) > 1 and node.input[1]:
        v = ctx.constant_value(node.input[1])
        return None if v is None else [int(a) for a in v.reshape(-1)]
    return None


def _selects(ctx: ModelContext, node: onnx.NodeProto, tensor: str, axis: int) -> bool:
    """True when ``node`` picks fixed slices of ``tensor`` along ``axis`` (Gather/Split/Slice)."""
    if node.input[0] != tensor:
        return False
    rank = ctx.rank(tensor)
    if rank is None:
        return False
    if node.op_type == "Gather":
        return attr_int(node, "axis", 0) % rank == axis and ctx.constant_value(node.input[1]) is not None
    if node.op_type == "Split":
        return attr_int(node, "axis", 0) % rank == axis
    if node.op_type == "Slice" and len(node.input) > 3 and node.input[3]:
        axes = ctx.constant_value(node.input[3])
        return axes is not None and axis in [int(a) % rank for a in axes.reshape(-1)]
    return False


def is_structural(ctx: ModelContext, tensor: str, axis: int) -> bool:
    """True when every use of ``axis`` of ``tensor`` (through layout ops) selects fixed slices."""
    frontier: list[Space] = [(tensor, axis)]
    seen = 0
    while frontier:
        t, a = frontier.pop()
        users = ctx.consumers.get(t, [])
        if not users or t in ctx.graph_outputs or seen > _MAX_TRACE:
            return False
        for node in users:
            seen += 1
            if _selects(ctx, node, t, a):
                continue
            nxt = _next_axis(ctx, node, t, a) if node.input[0] == t else None
            if nxt is None:
                return False
            frontier.append(nxt)
    return True


def is_softmaxed(ctx: ModelContext, tensor: str, axis: int) -> bool:
    """True when a Softmax normalises over ``axis`` of ``tensor`` (through layout ops): SKNet's
    and ResNeSt's attention across branches reshapes ``(B, 2·C)`` to ``(B, 2, C)`` and softmaxes
    over the 2. Such an axis weighs branches against each other; it is never the one pruned."""
    frontier: list[Space] = [(tensor, axis)]
    seen = 0
    while frontier:
        t, a = frontier.pop()
        for node in ctx.consumers.get(t, []):
            seen += 1
            if seen > _MAX_TRACE or node.input[0] != t:
                return False
            rank = ctx.rank(t)
            if node.op_type in ("Softmax", "LogSoftmax") and rank is not None:
                if attr_int(node, "axis", -1 if ctx.opset >= 13 else 1) % rank == a:
                    return True
                continue
            nxt = _next_axis(ctx, node, t, a)
            if nxt is not None:
                frontier.append(nxt)
    return False


def couple_split(ctx: ModelContext, node: onnx.NodeProto, c: Coupling, space: Space,
                 src: tuple[Space, int], parts: list[tuple[Space, int]]) -> Coupling:
    """Couple ``space`` through a Reshape that splits axis ``src`` into the axes ``parts``
    (``(space, size)`` pairs, outermost first; a folded ``B·H`` axis counts as ``H``)."""
    x_space, n = src
    mode = getattr(ctx, "head_mode", "whole")
    if mode == "none":
        return c.block(space, f"{node_label(node)} splits axis {x_space[1]} of '{x_space[0]}' into heads; "
                              "attention widths are kept (--prune-heads none)")
    sizes = [k for _, k in parts]
    if int(np.prod(sizes, dtype=np.int64)) != n:
        return c.block(space, f"{node_label(node)} sizes of axis {x_space[1]} of '{x_space[0]}' do not match its split")
    free = [k for k, (s, _) in enumerate(parts) if not is_structural(ctx, *s) and not is_softmaxed(ctx, *s)]
    if not free:
        return c.block(space, f"{node_label(node)} splits axis {x_space[1]} of '{x_space[0]}' only into selected slices")
    chosen = free[0] if mode == "whole" else free[-1]
    digits = np.indices(sizes).reshape(len(sizes), -1)
    which = chosen if space == x_space else [s for s, _ in parts].index(space)
    return c.link(x_space, parts[which][0], np.arange(n), digits[which])


def couple_batched_matmul(ctx: ModelContext, node: onnx.NodeProto, space: Space) -> Coupling:
    """``A @ B`` with both operands computed at run time (see module docstring)."""
    c = Coupling()
    a, b, y = node.input[0], node.input[1], node.output[0]
    ranks = ranks_or_block(ctx, c, space, node, [a, b, y])
    if ranks is None:
        return c
    ra, rb, ry = ranks
    if ra < 2 or rb < 2:
        return c.block(space, f"{node_label(node)} multiplies a vector; its axes are not followed")
    side, idx = position(node, space[0])
    # Map the asked axis to a role: "batch" (with its output axis), "k", "rows" or "cols".
    ax = space[1]
    if side == "out":
        role, out_axis = "rows" if ax == ry - 2 else "cols" if ax == ry - 1 else "batch", ax
    elif idx == 0:
        role, out_axis = "k" if ax == ra - 1 else "rows" if ax == ra - 2 else "batch", ax + ry - ra
    else:
        role, out_axis = "k" if ax == rb - 2 else "cols" if ax == rb - 1 else "batch", ax + ry - rb
    if role == "batch":
        members = [(y, out_axis)]
        for t, rt in ((a, ra), (b, rb)):
            at = out_axis - (ry - rt)
            if 0 <= at < rt - 2:
                members.append((t, at))
    else:
        members = {"k": [(a, ra - 1), (b, rb - 2)], "rows": [(a, ra - 2), (y, ry - 2)],
                   "cols": [(b, rb - 1), (y, ry - 1)]}[role]
    n = dim_or_block(ctx, c, space, node, space)
    if n is None:
        return c
    return tie_axes(c, ctx, node, space, [m for m in members if m != space], n)


def tie_axes(c: Coupling, ctx: ModelContext, node: onnx.NodeProto, space: Space, members: list[Space],
             n: int) -> Coupling:
    """Couple ``space`` (``n`` channels) with each of ``members``, the same axis of the other
    operands of a product (MatMul, Einsum); a member of size 1 broadcasts and is skipped, and a
    folded B·H axis ties to an unknown size; any other unknown or different size blocks."""
    for m in members:
        dm = ctx.dim(*m)
        if dm == 1 and n != 1:
            continue  # broadcast: the channel is not indexed there
        if dm is None and ctx.is_folded(space):
            c.same(space, m, n)  # both B·H: the other side is folded too
            continue
        if dm != n:
            return c.block(space, f"shape of '{m[0]}' axis {m[1]} unknown or different at {node_label(node)}")
        c.same(space, m, n)
    return c
