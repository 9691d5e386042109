"""Turn ``Identity(stored tensor)`` outputs that are about to be sliced into initializers.

Rules: for each named tensor produced by an Identity whose input is an initializer or Constant
output (directly or through more Identities), add an initializer of that name holding a copy
of the value, and remove the Identity. The source tensor is left for its other users (and for
CleanupPass when it has none). A name this pass materialized that has gone since is done: a
later pass gave its readers another tensor (a compensated bias) and CleanupPass removed it.
Running it again changes nothing.
Refuses (PassError) a name that is neither stored nor such an Identity output.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from onnx import numpy_helper
from spa.passes.base import Pass, PassError, PassResult
from spa.passes.slice_initializers import stored_tensors


def identity_views(model: onnx.ModelProto) -> dict[str, str]:
    """``Identity(stored)`` outputs of the main graph -> the stored tensor they copy."""
    stored = stored_tensors(model)
    views: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input:
            src = views.get(node.input[0], node.input[0])
            if src in stored:
                views[node.output[0]] = src
    return views


def views_to_materialize(views: dict[str, str], sliced: Iterable[str]) -> set[str]:
    """Views that are sliced, or whose source is: both must stop sharing one tensor."""
    sliced = set(sliced)
    return {v for v, src in views.items() if v in sliced or src in sliced}


class MaterializeViewsPass(Pass):
    """Turn the named ``Identity(stored tensor)`` outputs into initializers holding a copy of the
    value, so each view is sliced on its own; the source tensor stays for its other readers.
    Refuses (PassError) a name that is neither stored nor such an Identity output.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)
        self.done: set[str] = set()

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = model.graph
        stored = stored_tensors(model)
        producer = {o: n for n in g.node for o in n.output}
        todo = [n for n in sorted(self.names - self.done) if n not in stored]
        removed: list[onnx.NodeProto] = []
        for name in todo:
            src, node = name, producer.get(name)
            while node is not None and node.op_type == "Identity" and src not in stored:
                src = node.input[0]
                node = producer.get(src)
            if src not in stored:
                raise PassError(f"'{name}' is neither a stored tensor nor an Identity of one")
            value = numpy_helper.to_array(stored[src])
            g.initializer.append(numpy_helper.from_array(value.copy(), name))
            removed.append(producer[name])
            self.done.add(name)
        for node in removed:
            g.node.remove(node)
        return PassResult(model, bool(todo))
