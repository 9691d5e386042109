"""Einsum: every axis is named by a label, and one label is one channel space across operands.

``Einsum("bghid,bghjd->bghij", q, k)`` (MaxViT's attention scores) pairs axes by their labels:
an axis labelled ``h`` in any operand carries the same channels as the axis labelled ``h`` in
every other operand and in the output, index for index. A label missing from the output is
contracted: its axes are coupled among the inputs (like the ``K`` of a MatMul) and the channel
ends there. A label that only a constant operand (a weight) and the output share creates
channels, like a MatMul's output features. An operand of size 1 on a label broadcasts and is not
indexed. Labels may be upper or lower case, spaces are ignored, and ``...`` stands for the axes a
term does not name (aligned from the right, as numpy broadcasts them).

Refuses (blocks the group): a label repeated within one term (a diagonal or a trace), a tensor
used twice under different labels at the asked axis, sizes that differ or are unknown, and
equations it cannot parse.
"""

from __future__ import annotations

import onnx

from spa.analysis.rules.attention import tie_axes
from spa.analysis.rules.base import Coupling, Rule, register
from spa.model.einsum import Terms, parse
from spa.model.graph import ModelContext, Space, attr, attr_str, node_label


@register
class EinsumRule(Rule):
    op_types = ("Einsum",)

    def _terms(self, node: onnx.NodeProto, ctx: ModelContext) -> Terms | None:
        eq = attr_str(node, "equation")
        if eq is None:
            return None
        return parse(eq, [ctx.rank(i) for i in node.input])

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        """Output axes whose label only constant operands (weights) carry besides the output."""
        terms = self._terms(node, ctx)
        if terms is None:
            return []
        inputs, out = terms
        if any(len(set(labels)) != len(labels) for labels in inputs):
            return []
        seeds = []
        for k, label in enumerate(out):
            readers = [i for i, labels in enumerate(inputs) if label in labels]
            if readers and all(ctx.is_constant(node.input[i]) for i in readers):
                seeds.append((node.output[0], k))
        return seeds

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        terms = self._terms(node, ctx)
        if terms is None:
            return c.block(space, f"{node_label(node)} equation {attr(node, 'equation')!r} is not understood here")
        inputs, out = terms
        places = [(t, labels) for t, labels in zip(node.input, inputs)] + [(node.output[0], out)]
        labels_here = {labels[space[1]] for t, labels in places if t == space[0] and space[1] < len(labels)}
        if len(labels_here) != 1:
            return c.block(space, f"{node_label(node)} reads '{space[0]}' under different labels at axis {space[1]}")
        label = labels_here.pop()
        members: list[Space] = []
        for t, labels in places:
            if labels.count(label) > 1:
                return c.block(space, f"{node_label(node)} repeats label '{label}' in one operand (a diagonal)")
            if label in labels and (t, labels.index(label)) != space:
                members.append((t, labels.index(label)))
        n = ctx.dim(*space)
        if n is None:
            return c.block(space, f"shape of '{space[0]}' axis {space[1]} is unknown at {node_label(node)}")
        return tie_axes(c, ctx, node, space, members, n)
