"""Ops that generate a tensor from literals, such as ``Range``.

The dynamo exporter builds a rotary embedding's frequencies ``1 / base ** (arange(0, D, 2) / D)``
in the graph, from a ``Range`` of literals; element-wise ops then carry its axis into the head
dims. Such a tensor is a constant that happens to be computed: pruning its axis replaces it, for
its readers, by the literal of the values that survive.
"""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.base import Coupling, KeptMap, RewriteSink, Rule, register
from spa.analysis.rules.shape_vectors import couple_target, rewrite_target
from spa.model.graph import ModelContext, Space, attr_tensor, node_label


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


def _target_reader(node: onnx.NodeProto) -> onnx.NodeProto:
    """``node`` seen as a reader of a target shape in input 1, as Reshape and Expand read theirs,
    so that the shape-target helpers of :mod:`spa.analysis.rules.shape_vectors` apply to ConstantOfShape."""
    proxy = onnx.NodeProto()
    proxy.CopyFrom(node)
    del proxy.input[:]
    proxy.input.extend(["", node.input[0]])
    return proxy


@register
class ConstantOfShapeRule(Rule):
    """ConstantOfShape filled with 0: a tensor of zeros whose axes take their sizes from the shape
    input (TorchScript builds an LSTM's initial state as ``ConstantOfShape([dirs, batch, H])``).

    Pruning an axis writes the new size into the shape literal (or the Concat piece that holds it).
    Refuses a fill value other than 0 (a removed channel would not be zero in the masked model),
    a size computed at run time, and asking about the shape input.
    """

    op_types = ("ConstantOfShape",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        if space[0] != node.output[0]:
            return c.block(space, f"{node_label(node)} input '{space[0]}' is a shape")
        value = attr_tensor(node, "value")
        if value is not None and np.any(onnx.numpy_helper.to_array(value) != 0):
            return c.block(space, f"{node_label(node)} fills with a value other than 0")
        couple_target(ctx, c, _target_reader(node), space[1], keep_values=())
        return c

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        y = node.output[0]
        literal = ctx.constant_value(node.input[0])
        if literal is None:  # built by a Concat: the helper rewrites the piece, on the real Concat
            return rewrite_target(_target_reader(node), ctx, kept, out, keep_values=())
        value = np.array(literal, dtype=np.int64).reshape(-1)
        for b in range(value.size):
            if (y, b) in kept:
                value[b] = len(kept[(y, b)])
        return out.set_input_constant(node, 0, value)
