"""Convolutions: Conv and ConvTranspose, 1-D to 3-D, plain, grouped and depthwise.

A plain convolution (``group == 1``) *creates* output channels (weight rows, bias) and
*consumes* input channels (weight columns): input and output are not coupled.

A grouped convolution is pruned by whole groups: one unit of its group is one conv group —
its slice of input channels together with its slice of output channels. Depthwise convs are
the case of one input channel per group. Pruning keeps the weight's per-group axis intact and
lowers the ``group`` attribute. Pruning individual channels inside groups is not done.
"""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.base import Coupling, KeptMap, Rule, dim_or_block, register
from spa.model.graph import ModelContext, Space, attr_int, node_label


class _ConvBase(Rule):
    # Weight axis that indexes output channels, and the one that indexes input channels.
    transposed: bool = False

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        return [(node.output[0], 1)]

    def _spaces(self, node: onnx.NodeProto, g: int) -> tuple[list[Space], list[Space]]:
        """The spaces indexed by input channels and those indexed by output channels."""
        x, w, y = node.input[0], node.input[1], node.output[0]
        b = node.input[2] if len(node.input) > 2 and node.input[2] else None
        ins: list[Space] = [(x, 1)]
        outs: list[Space] = [(y, 1)] + ([(b, 0)] if b else [])
        # Conv weight (M, C/g, ...): axis 0 always spans all outputs, axis 1 all inputs only
        # when g == 1. ConvTranspose weight (C, M/g, ...): the other way round.
        if self.transposed:
            ins.append((w, 0))
            if g == 1:
                outs.append((w, 1))
        else:
            outs.append((w, 0))
            if g == 1:
                ins.append((w, 1))
        return ins, outs

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, w, y = node.input[0], node.input[1], node.output[0]
        g = attr_int(node, "group", 1)
        if not ctx.is_constant(w):
            return c.block(space, f"{node_label(node)} weight '{w}' is not a constant")
        rw, rx = ctx.rank(w), ctx.rank(x)
        if rw is None or rw < 3 or (rx is not None and rx != rw):
            return c.block(space, f"{node_label(node)} weight '{w}' has rank {rw}, not a kernel's (M, C, k...) of "
                                  f"its input's rank {rx}")
        ins, outs = self._spaces(node, g)
        if space not in ins and space not in outs:
            return c.block(
                space, f"{node_label(node)} cannot prune axis {space[1]} of '{space[0]}' "
                "(spatial, batch or per-group axis)"
            )
        m = dim_or_block(ctx, c, (y, 1), node, space)
        cin = dim_or_block(ctx, c, (x, 1), node, space)
        if m is None or cin is None:
            return c
        for spaces, n in ((ins, cin), (outs, m)):
            if g > 1 or space in spaces:
                for s in spaces[1:]:
                    c.same(spaces[0], s, n)
        if g == 1:
            return c
        # Grouped: every channel of one conv group, input and output, is one unit: tie each
        # to the group's first output channel.
        if cin % g or m % g:
            return c.block(space, f"{node_label(node)} channels not divisible by group={g}")
        mo, ci = m // g, cin // g
        r = np.arange(m)
        c.link((y, 1), (y, 1), r, (r // mo) * mo)
        ri = np.arange(cin)
        c.link((x, 1), (y, 1), ri, (ri // ci) * mo)
        return c

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        """Set ``group`` from the surviving channels; the per-group weight axis is unchanged."""
        if attr_int(node, "group", 1) == 1:
            return False
        space = (node.output[0], 1) if self.transposed else (node.input[0], 1)
        if space not in kept:
            return False
        wshape = ctx.shape(node.input[1])
        per_group = wshape[1] if wshape is not None and len(wshape) > 1 else None
        if per_group is None:
            return False
        new_g = len(kept[space]) // per_group
        changed = False
        for a in node.attribute:
            if a.name == "group" and a.i != new_g:
                a.i = new_g
                changed = True
        return changed


@register
class ConvRule(_ConvBase):
    """Conv: weight ``(M, C/group, k...)``."""

    op_types = ("Conv",)


@register
class ConvTransposeRule(_ConvBase):
    """ConvTranspose: weight ``(C, M/group, k...)``; ``output_shape`` only names spatial dims."""

    op_types = ("ConvTranspose",)
    transposed = True
