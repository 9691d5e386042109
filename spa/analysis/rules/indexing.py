"""Indexing ops whose trailing data axes pass through: GatherND.

``GatherND(data, indices, batch_dims=b)`` with ``indices`` of rank ``q`` whose last axis has
size ``k`` picks, for every index tuple, the slice ``data[i_0, ..., i_{k-1}, ...]``. Data axes
from ``b + k`` on are copied whole into the output, after the ``q - 1`` leading index axes; a
channel on such an axis keeps its index (the dynamo exporter writes ``table[index]`` of a
relative-position bias table this way, with the heads on the table's last axis).
"""

from __future__ import annotations

import onnx

from spa.analysis.rules.base import Coupling, Rule, dim_or_block, ranks_or_block, register
from spa.model.graph import ModelContext, Space, attr_int, node_label


@register
class GatherNDRule(Rule):
    """Data axis ``a >= b + k`` is output axis ``q - 1 + a - b - k``.

    Refuses (blocks) the indexed data axes ``[b, b + k)``, the batch axes ``< b`` (they are
    shared with ``indices``), every output axis that comes from the indices, the indices
    themselves, and an index tuple length ``k`` that is unknown.
    """

    op_types = ("GatherND",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        data, idx, y = node.input[0], node.input[1], node.output[0]
        ranks = ranks_or_block(ctx, c, space, node, [data, idx])
        if ranks is None:
            return c
        q = ranks[1]
        if space[0] == idx and space[0] != data:
            return c.block(space, f"{node_label(node)} indices '{idx}' are not data")
        k = ctx.dim(idx, q - 1)
        if k is None:
            return c.block(space, f"{node_label(node)}: the index tuple length of '{idx}' is unknown")
        b = attr_int(node, "batch_dims", 0)
        first = b + k  # first data axis that is copied whole
        if space[0] == data:
            a, out = space[1], q - 1 + space[1] - first
            if a < first:
                return c.block(space, f"{node_label(node)} indexes axis {a} of '{data}'")
        else:
            out, a = space[1], space[1] - (q - 1) + first
            if out < q - 1:
                return c.block(space, f"{node_label(node)} output axis {out} of '{y}' comes from the indices")
        n = dim_or_block(ctx, c, space, node, space)
        return c if n is None else c.same((data, a), (y, out), n)
