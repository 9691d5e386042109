"""Rewrite integer constants that encode channel counts: Reshape targets, Split sizes (opset
>= 13), Slice starts/ends, Resize sizes.

Rules: each node's coupling rule (``Rule.rewrite_constants``) computes the new values; a changed
value is written to a *new* initializer and the node's input is pointed at it, so a constant
shared with other nodes is never changed under them. Running it again changes nothing.
Refuses nothing itself: a node whose constants could not be rewritten blocked its group earlier.
"""

from __future__ import annotations

import onnx
from spa.passes.base import Pass, PassResult

from spa.analysis.rules import KeptMap, RewriteSink, rule_for
from spa.model.graph import ModelContext


class RewriteShapeConstantsPass(Pass):
    """Rewrite the integer constants that encode channel counts (Reshape targets, Split sizes,
    Slice bounds, Resize sizes) as each node's coupling rule computes them, into new initializers
    so a constant shared with other nodes is never changed under them. Refuses nothing: a node
    whose constants could not be rewritten blocked its group earlier.
    """

    def __init__(self, ctx: ModelContext, kept: KeptMap) -> None:
        self.ctx = ctx
        self.kept = kept

    def call(self, model: onnx.ModelProto) -> PassResult:
        sink = RewriteSink(model.graph)
        modified = False
        for node in model.graph.node:
            rule = rule_for(node)
            if rule is not None and rule.rewrite_constants(node, self.ctx, self.kept, sink):
                modified = True
        sink.flush()
        return PassResult(model, modified)
