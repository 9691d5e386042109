"""Element-wise ops: one-input activations, and broadcasting multi-input arithmetic.

Both keep channel indices unchanged. A broadcasting op ties the aligned axes of every input
whose size there is not 1 — that is what couples residual branches (Add), SE scaling (Mul) and
per-channel constants (a bias tensor becomes a member of the group and is sliced with it).
"""

from __future__ import annotations

import onnx

from spa.analysis.rules.base import Coupling, Rule, dim_or_block, position, ranks_or_block, register
from spa.model.graph import ModelContext, Space, node_label


@register
class UnaryRule(Rule):
    """Ops whose first output is a function of their first input, element by element.

    Extra inputs (Clip's min/max, Dropout's ratio) are scalars and are not coupled; a second
    output of the same shape (Dropout's mask) is coupled like the first.
    """

    op_types = (
        "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
        "Celu", "ThresholdedRelu", "Softplus", "Softsign", "Erf", "Gelu", "Mish", "Clip",
        "Identity", "Dropout", "Cast", "CastLike", "Neg", "Abs", "Sqrt", "Exp", "Log",
        "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Not", "IsNaN", "IsInf",
        "Shrink",
    )  # fmt: skip

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        side, idx = position(node, space[0])
        if node.op_type == "Identity" and node.output[0] in ctx.views:
            return c  # a view of a stored tensor is sliced on its own (see ModelContext.views)
        if node.op_type == "CastLike" and (side, idx) == ("in", 1):
            return c  # only the element type of input 1 is read
        if side == "in" and idx > 0:
            return c.block(space, f"{node_label(node)} input {idx} is a scalar parameter")
        n = dim_or_block(ctx, c, space, node, space)
        if n is None:
            return c
        data = [node.input[0], *[o for o in node.output if o]]
        for t in data:
            if t != space[0]:
                c.same(space, (t, space[1]), n)
        return c


@register
class BroadcastRule(Rule):
    """Multi-input element-wise ops with numpy-style broadcasting.

    Refuses (blocks) when an aligned axis has an unknown size. PRelu's slope broadcasts to its
    input the same way, so a per-channel slope is sliced with the channels.
    """

    op_types = (
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
        "Mod", "BitShift", "And", "Or", "Xor", "Equal", "Greater", "Less", "GreaterOrEqual",
        "LessOrEqual",
    )  # fmt: skip

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        out = node.output[0]
        side, _ = position(node, space[0])
        ranks = ranks_or_block(ctx, c, space, node, [out, space[0]])
        if ranks is None:
            return c
        ry, rs = ranks
        ao = space[1] + (ry - rs) if side == "in" else space[1]
        folded = ctx.is_folded(space)
        n = ctx.dim(*space) if folded else dim_or_block(ctx, c, (out, ao), node, space)
        if n is None:
            return c
        if side == "in" and n != 1 and ctx.dim(*space) == 1:
            return c  # this input broadcasts along the axis (FocalNet's gate slice): it indexes no channel
        for t in [*[i for i in node.input if i], out]:
            if t == space[0]:
                continue
            rk = ctx.rank(t)
            if rk is None:
                return c.block(space, f"rank of '{t}' unknown at {node_label(node)}")
            ak = ao - (ry - rk)
            if ak < 0:
                continue
            dk = ctx.dim(t, ak)
            if dk == 1 and n != 1:
                continue  # broadcast along this axis: the channel is not indexed here
            if dk is None and folded:
                c.same(space, (t, ak), n)  # both B·H: the other side is folded too
                continue
            if dk is None:
                return c.block(space, f"shape of '{t}' axis {ak} unknown at {node_label(node)}")
            c.same(space, (t, ak), n)
        return c
