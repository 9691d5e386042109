"""Update node attributes that encode channel counts (Conv ``group``, Split ``split``).

Rules: each node's coupling rule (``Rule.update_attributes``) computes the attribute from the
surviving channels; the pass applies it where it differs. Running it again changes nothing.
Refuses nothing itself: nodes without a rule are left alone (their groups were blocked).
"""

from __future__ import annotations

import onnx
from spa.passes.base import Pass, PassResult

from spa.analysis.rules import KeptMap, rule_for
from spa.model.graph import ModelContext


class UpdateAttributesPass(Pass):
    """Set the attributes that encode channel counts (Conv ``group``, Split ``split``, contrib
    attention ``num_heads``...) to what each node's coupling rule computes from the surviving
    channels. Leaves nodes without a rule alone (their groups were blocked); refuses nothing.
    """

    def __init__(self, ctx: ModelContext, kept: KeptMap) -> None:
        self.ctx = ctx
        self.kept = kept

    def call(self, model: onnx.ModelProto) -> PassResult:
        modified = False
        for node in model.graph.node:
            rule = rule_for(node)
            if rule is not None and rule.update_attributes(node, self.ctx, self.kept):
                modified = True
        return PassResult(model, modified)
