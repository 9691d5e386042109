"""Channel shuffle: ``Reshape(N, g, C/g, H, W) → Transpose(0, 2, 1, 3, 4) → Reshape(N, C, H, W)``.

The three nodes permute channels: input channel ``i·c + j`` (group ``i``, position ``j``,
``c = C/g``) becomes output channel ``j·g + i``. Pruning must keep the ``(g, c)`` grid, so a
unit is one position ``j`` in every group, which is ``g`` input channels and ``g`` consecutive
output channels. The two targets are rewritten to ``c'`` and ``C' = g·c'``. A target computed
at run time is accepted only when it is read from the input's own shape (as the TorchScript
exporter writes it).

Refuses any other use of the intermediate tensors, and any other permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from spa.analysis.rules.base import Coupling, KeptMap, RewriteSink
from spa.analysis.rules.shape_vectors import shape_literal
from spa.model.graph import ModelContext, Space, attr_ints, node_label


@dataclass(frozen=True)
class Shuffle:
    first: onnx.NodeProto
    last: onnx.NodeProto
    x: str
    y: str
    groups: int
    per_group: int


def find_shuffle(ctx: ModelContext, node: onnx.NodeProto) -> Shuffle | None:
    """The shuffle that ``node`` (either Reshape of it) belongs to, or None."""
    first: onnx.NodeProto | None = node
    if (ctx.rank(node.input[0]) or 0) == 5:  # the closing Reshape: walk back through the Transpose
        t = _skip_identity_back(ctx, ctx.producer.get(node.input[0]))
        first = _skip_identity_back(ctx, ctx.producer.get(t.input[0])) if t is not None and t.op_type == "Transpose" else None
    if first is None or first.op_type != "Reshape" or ctx.rank(first.input[0]) != 4 or ctx.rank(first.output[0]) != 5:
        return None
    t = _only_user(ctx, first)
    if t is None or t.op_type != "Transpose" or attr_ints(t, "perm") != [0, 2, 1, 3, 4]:
        return None
    last = _only_user(ctx, t)
    if last is None or last.op_type != "Reshape" or ctx.rank(last.output[0]) != 4:
        return None
    sx, mid, sy = ctx.shape(first.input[0]), ctx.shape(first.output[0]), ctx.shape(last.output[0])
    if sx is None or mid is None or sy is None or sx[1:] != sy[1:]:
        return None
    g, c = mid[1], mid[2]
    if sx[1] is None or g is None or c is None:
        return None
    if g * c != sx[1] or tuple(mid[3:]) != tuple(sx[2:]):
        return None
    return Shuffle(first, last, first.input[0], last.output[0], g, c)


def _only_user(ctx: ModelContext, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The single reader of ``node``'s output, looking through Identity (``.contiguous()``)."""
    users = ctx.consumers.get(node.output[0], [])
    while len(users) == 1 and users[0].op_type == "Identity":
        users = ctx.consumers.get(users[0].output[0], [])
    return users[0] if len(users) == 1 else None


def _skip_identity_back(ctx: ModelContext, node: onnx.NodeProto | None) -> onnx.NodeProto | None:
    while node is not None and node.op_type == "Identity":
        node = ctx.producer.get(node.input[0])
    return node


def couple_shuffle(ctx: ModelContext, node: onnx.NodeProto, s: Shuffle, space: Space) -> Coupling:
    c = Coupling()
    if space not in ((s.x, 1), (s.y, 1)):
        return c.block(space, f"{node_label(node)} is part of a channel shuffle; only its channel axis can be pruned")
    for reshape, axis in ((s.first, 2), (s.last, 1)):
        if not _target_follows(ctx, reshape, axis, s.x):
            return c.block(space, f"{node_label(reshape)} target size of axis {axis} cannot be rewritten")
    i, j = np.divmod(np.arange(s.groups * s.per_group), s.per_group)  # input channel = i*c + j
    c.link((s.x, 1), (s.y, 1), i * s.per_group + j, j * s.groups + i)
    c.link((s.x, 1), (s.x, 1), i * s.per_group + j, j)  # position j of every group is one unit
    return c


def _target_follows(ctx: ModelContext, reshape: onnx.NodeProto, axis: int, x: str) -> bool:
    """The target value for ``axis`` is a literal we can rewrite, or is read from ``x``'s shape."""

    return shape_literal(reshape, ctx, axis) is not None or _reads_shape_of(ctx, reshape.input[1], x)


def _reads_shape_of(ctx: ModelContext, name: str, x: str, depth: int = 0) -> bool:
    node = ctx.producer.get(name)
    if node is None or depth > 16:
        return False
    if node.op_type == "Shape":
        return node.input[0] == x
    return any(_reads_shape_of(ctx, i, x, depth + 1) for i in node.input if i)


def rewrite_shuffle(ctx: ModelContext, s: Shuffle, node: onnx.NodeProto, kept: KeptMap, out: RewriteSink) -> bool:
    """Write ``c'`` into the opening target and ``C'`` into the closing one, where literal."""

    if (s.x, 1) not in kept:
        return False
    n = len(kept[(s.x, 1)])
    reshape, axis, value = (s.first, 2, n // s.groups) if node.name == s.first.name else (s.last, 1, n)
    loc = shape_literal(reshape, ctx, axis)
    if loc is None:
        return False  # read from the input's shape at run time
    owner, idx, off = loc
    original = np.array(ctx.constant_value(owner.input[idx]), dtype=np.int64).reshape(-1)
    if original[off] in (0, -1):
        return False
    current = out.current(owner, idx)
    target = (np.array(current, dtype=np.int64).reshape(-1) if current is not None else original).copy()
    if target[off] == value:
        return False
    target[off] = value
    return out.set_input_constant(owner, idx, target)
