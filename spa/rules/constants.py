"""Ops that generate a tensor from literals, such as ``Range``.

The dynamo exporter builds a rotary embedding's frequencies ``1 / base ** (arange(0, D, 2) / D)``
in the graph, from a ``Range`` of literals; element-wise ops then carry its axis into the head
dims. Such a tensor is a constant that happens to be computed: pruning its axis replaces it, for
its readers, by the literal of the values that survive.
"""

from __future__ import annotations

import numpy as np
import onnx

from spa.graph import ModelContext, Space, node_label
from spa.rules.base import Coupling, KeptMap, RewriteSink, Rule, register


@register
class RangeRule(Rule):
    """Range of literal start, limit and delta: a constant vector; its readers get the kept values.

    Refuses a Range computed at run time (e.g. the positions ``arange(seq)`` of a dynamic sequence),
    and asking about its scalar inputs.
    """

    op_types = ("Range",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        if space[0] != node.output[0]:
            return c.block(space, f"{node_label(node)} input '{space[0]}' is a scalar bound")
        if ctx.constant_value(space[0]) is None:
            return c.block(space, f"{node_label(node)} computes '{space[0]}' at run time")
        return c

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        y = node.output[0]
        if (y, 0) not in kept:
            return False
        value = ctx.constant_value(y)
        assert value is not None  # couple() blocked a Range computed at run time
        literal = np.ascontiguousarray(value[np.asarray(kept[(y, 0)], dtype=np.int64)])
        changed = False
        for reader in ctx.consumers.get(y, []):
            for k, name in enumerate(reader.input):
                if name == y:
                    changed = out.set_input_constant(reader, k, literal) or changed
        return changed
