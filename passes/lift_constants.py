"""Lift floating-point ``Constant`` nodes into initializers, so weights held in them prune like any
other weight.

Some exporters keep a weight in a ``Constant`` node instead of an initializer (TorchScript folds
a rotary ``inv_freq`` into one, hand-written graphs put a MatMul's B there). The coupling rules,
the criteria and the compensation read weights from initializers; a ``Constant`` producer has
no coupling rule and would block its group.

Rules: a ``Constant`` node of the main graph whose ``value`` is a floating-point tensor of more
than one element becomes an initializer of the same name holding that tensor, and the node is
removed. Running it again changes nothing.
Refuses (leaves in place) tensors of one element (a scalar broadcasts and is never sliced),
integer, boolean and string tensors (shape vectors, axes and indices, which the rules read as
literals either way, so a model without float ``Constant`` weights comes out unchanged),
``sparse_value`` and the ``value_float(s)``/``value_int(s)`` forms, a ``Constant`` whose output
is a graph output, ``Constant`` nodes inside subgraphs, and models of IR version below 4 (there,
every initializer must also be a graph input).
"""

from __future__ import annotations

import numpy as np
import onnx
from spa.passes.base import Pass, PassResult

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def liftable(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor of a main-graph ``Constant`` node this pass lifts, else None."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            t = a.t
            if t.data_type in _FLOAT and int(np.prod(t.dims, dtype=np.int64)) > 1:
                return t
    return None


class LiftConstantsPass(Pass):
    """Turn main-graph ``Constant`` nodes holding a float tensor of more than one element into
    initializers of the same name. Leaves in place scalars, integer/boolean/string tensors, the
    ``sparse_value`` and ``value_float(s)``/``value_int(s)`` forms, graph outputs, subgraph
    constants, and every constant of a model of IR version below 4.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = model.graph
        if model.ir_version < 4:
            return PassResult(model, False)
        outputs = {o.name for o in g.output}
        stored = {t.name for t in g.initializer}
        lifted: list[onnx.NodeProto] = []
        for node in g.node:
            t = liftable(node)
            name = node.output[0]
            if t is None or name in outputs or name in stored:
                continue
            init = g.initializer.add()
            init.CopyFrom(t)
            init.name = name
            lifted.append(node)
        for node in lifted:
            g.node.remove(node)
        return PassResult(model, bool(lifted))
