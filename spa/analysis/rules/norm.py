"""Per-channel normalisations: BatchNormalization and InstanceNormalization.

Both normalise each channel on its own, so slicing channels keeps the remaining ones exact.
Normalisations that average *across* channels (LayerNormalization over the channel axis,
GroupNormalization, LRN) have no rule here and block their groups.
"""

from __future__ import annotations

import onnx

from spa.analysis.rules.base import Coupling, Rule, rank_or_block, register, tie
from spa.model.graph import ModelContext, Space, attr_int, node_label


@register
class PerChannelNormRule(Rule):
    """Input axis 1, output axis 1 and every parameter's axis 0 are the same channels."""

    op_types = ("BatchNormalization", "InstanceNormalization")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        members: list[Space] = [(node.input[0], 1), (node.output[0], 1)]
        members += [(p, 0) for p in node.input[1:] if p]
        members += [(o, 0) for o in node.output[1:] if o]  # training-mode running stats
        return tie(ctx, node, space, [members])


@register
class LayerNormRule(Rule):
    """LayerNormalization: axes before ``axis`` pass through; the normalised axes carry the
    scale and bias.

    Pruning a normalised axis changes the mean and variance the op computes, so masked
    equivalence holds only approximately. The coupling records that (``inexact``). Such groups
    are pruned only when the user opts in (``--prune-norm-axes``); otherwise they are blocked
    with that reason. Only a single normalised axis (the last) is followed.
    """

    op_types = ("LayerNormalization",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        rank = rank_or_block(ctx, c, space, node, x)
        if rank is None:
            return c
        axis = attr_int(node, "axis", -1) % rank
        params = [(p, 0) for p in node.input[1:3] if p]
        if space[0] in (x, y):
            a = space[1]
        elif space in params:
            a = rank - 1
        else:
            return c.block(space, f"{node_label(node)} cannot prune axis {space[1]} of '{space[0]}'")
        if a < axis:
            members: list[Space] = [(x, a), (y, a)]
        elif axis == rank - 1:
            members = [(x, a), (y, a), *params]
            c.inexact.append(f"{node_label(node)} normalises over a pruned axis")
        else:
            return c.block(space, f"{node_label(node)} normalises over several axes")
        extra = [o for o in node.output[1:] if o]  # mean / inv-std outputs
        if extra:
            return c.block(space, f"{node_label(node)} exposes its statistics")
        t = tie(ctx, node, space, [members])
        c.edges, c.blocks = t.edges, [*c.blocks, *t.blocks]
        return c
