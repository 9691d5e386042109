"""Drop value_info entries whose shapes pruning made stale.

Rules: every ``graph.value_info`` entry named in ``tensors`` (every tensor of a pruned group,
activation or weight) is removed; shape inference recomputes them. Graph inputs and outputs are never touched
(pruning never changes the model's interface). Running it again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from spa.passes.base import Pass, PassError, PassResult


class DropValueInfoPass(Pass):
    """Remove the ``value_info`` entries of the given tensors (their shapes changed with pruning).
    Leaves graph inputs and outputs and every other entry alone; refuses nothing.
    """

    def __init__(self, tensors: Iterable[str]) -> None:
        self.tensors = set(tensors)

    def call(self, model: onnx.ModelProto) -> PassResult:
        vi = model.graph.value_info
        keep = [v for v in vi if v.name not in self.tensors]
        if len(keep) == len(vi):
            return PassResult(model, False)
        del vi[:]
        vi.extend(keep)
        return PassResult(model, True)

    def ensures(self, model: onnx.ModelProto) -> None:
        stale = [v.name for v in model.graph.value_info if v.name in self.tensors]
        if stale:
            raise PassError(f"stale value_info left: {stale[:5]}")
