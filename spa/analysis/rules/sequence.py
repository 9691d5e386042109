"""SplitToSequence + SequenceAt: how the dynamo exporter writes ``torch.split`` / ``chunk``.

The sequence itself is not a tensor. The rule maps the split input straight to the tensors
its ``SequenceAt`` readers take out, with the same offsets as Split. It refuses (blocks) when
the sequence has any other reader, a position is not a constant, or ``keepdims=0`` drops the
split axis.
"""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.base import Coupling, KeptMap, RewriteSink, Rule, register
from spa.model.graph import ModelContext, Space, attr_int, node_label


def _pieces(split: onnx.NodeProto, ctx: ModelContext) -> tuple[int, list[int], list[tuple[str, int, int]]] | str:
    """``(axis, sizes, [(tensor taken out, offset, size)])`` or why the split cannot be followed."""
    x = split.input[0]
    rank = ctx.rank(x)
    if rank is None:
        return f"rank unknown at {node_label(split)}"
    axis = attr_int(split, "axis", 0) % rank
    has_sizes = len(split.input) > 1 and bool(split.input[1])
    if not has_sizes and attr_int(split, "keepdims", 1) == 0:
        return f"{node_label(split)} drops the split axis (keepdims=0)"
    n = ctx.dim(x, axis)
    if n is None:
        return f"size of '{x}' axis {axis} unknown at {node_label(split)}"
    if has_sizes:
        v = ctx.constant_value(split.input[1])
        if v is None:
            return f"{node_label(split)} split sizes are computed at run time"
        sizes = [int(s) for s in np.broadcast_to(v.reshape(-1), (1,) if v.ndim == 0 else v.shape)]
        if v.ndim == 0:  # a scalar chunk size: equal pieces, the last one smaller
            sizes = [sizes[0]] * (n // sizes[0]) + ([n % sizes[0]] if n % sizes[0] else [])
    else:
        sizes = [1] * n
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    out: list[tuple[str, int, int]] = []
    for reader in ctx.consumers.get(split.output[0], []):
        if reader.op_type != "SequenceAt":
            return f"sequence of {node_label(split)} is read by {node_label(reader)}"
        pos = ctx.constant_value(reader.input[1])
        if pos is None or pos.size != 1:
            return f"{node_label(reader)} position is not a constant"
        k = int(pos.reshape(-1)[0]) % len(sizes)
        out.append((reader.output[0], int(offsets[k]), sizes[k]))
    return axis, sizes, out


@register
class SplitToSequenceRule(Rule):
    """Couples the split input with every ``SequenceAt`` output, by offsets on the split axis."""

    op_types = ("SplitToSequence", "SequenceAt")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        split = node if node.op_type == "SplitToSequence" else ctx.producer.get(node.input[0])
        if split is None or split.op_type != "SplitToSequence":
            return c.block(space, f"{node_label(node)} reads a sequence SPA cannot follow")
        found = _pieces(split, ctx)
        if isinstance(found, str):
            return c.block(space, found)
        axis, _, pieces = found
        x = split.input[0]
        if space[1] != axis:
            n = ctx.dim(*space)
            if n is None:
                return c.block(space, f"size of '{space[0]}' axis {space[1]} unknown at {node_label(node)}")
            for t, _, _ in pieces:
                c.same((x, space[1]), (t, space[1]), n)
            return c
        for t, off, size in pieces:
            r = np.arange(size)
            c.link((x, axis), (t, axis), off + r, r)
        return c

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        """New split sizes, always as a 1-D list: the surviving channels of each piece."""
        if node.op_type != "SplitToSequence" or len(node.input) < 2 or not node.input[1]:
            return False
        found = _pieces(node, ctx)
        if isinstance(found, str) or (node.input[0], found[0]) not in kept:
            return False
        keep, sizes = kept[(node.input[0], found[0])], found[1]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        new = np.array([int(np.count_nonzero((keep >= lo) & (keep < hi))) for lo, hi in zip(offsets[:-1], offsets[1:])],
                       dtype=np.int64)
        return out.set_input_constant(node, 1, new)

