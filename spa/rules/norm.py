"""Per-channel normalisations: BatchNormalization and InstanceNormalization.

Both normalise each channel on its own, so slicing channels keeps the remaining ones exact.
Normalisations that average *across* channels (LayerNormalization over the channel axis,
GroupNormalization, LRN) have no rule here and block their groups.
"""

from __future__ import annotations

import onnx

from spa.graph import ModelContext, Space
from spa.rules.base import Coupling, Rule, register, tie


@register
class PerChannelNormRule(Rule):
    """Input axis 1, output axis 1 and every parameter's axis 0 are the same channels."""

    op_types = ("BatchNormalization", "InstanceNormalization")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        members: list[Space] = [(node.input[0], 1), (node.output[0], 1)]
        members += [(p, 0) for p in node.input[1:] if p]
        members += [(o, 0) for o in node.output[1:] if o]  # training-mode running stats
        return tie(ctx, node, space, [members])
