"""Give every use of a shared parameter its own view, so equal values do not couple layers.

tf2onnx's optimizer (and other exporters and optimizers) merge equal-valued constants into one
initializer: the BatchNorm scales of an untrained network, all ones, become one tensor read by
every BatchNorm of that width. Read as one tensor, its axis couples every layer that reads it.

Rules: an initializer that is a floating-point tensor of more than one
element and is read in a *parameter position* at least twice gets for each such read ``k`` (counted in node order, then input
order; :func:`parameter_uses`) a node ``Identity(W) -> W__spa_use<k>`` that the reader reads
instead. Parameter positions: BatchNormalization inputs 1-4, Instance/Layer/GroupNormalization
1-2, Conv/ConvTranspose/Gemm 2, PRelu 1, and the stored operand of an element-wise Add, Sub, Mul,
Div, Max or Min whose other operand is computed. SPA's coupling slices each view on its own, like
the TorchScript exporter's ``Identity`` views. Running it again changes nothing.
Refuses (leaves shared) weights read as a MatMul/Conv/Gemm ``B`` or a Gather table (a shared
weight matrix is a deliberate tie), integer and one-element tensors, a tensor that is also a
graph input or output, and reads inside subgraphs.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import onnx
from spa.passes.base import Pass, PassResult
from spa.passes.slice_initializers import stored_tensors

_PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2), "Conv": (2,), "ConvTranspose": (2,), "Gemm": (2,), "PRelu": (1,),
}
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Max", "Min")
_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
_USE = re.compile(r"^(?P<source>.+)__spa_use(?P<uses>\d+(?:_\d+)*)$")

Use = tuple[onnx.NodeProto, int]
"""A read of a tensor: ``(node, input index)``."""


def use_name(source: str, uses: list[int]) -> str:
    """The name of the tensor that parameter uses ``uses`` of ``source`` read."""
    return f"{source}__spa_use{'_'.join(str(k) for k in sorted(uses))}"


def parse_use_name(name: str) -> tuple[str, list[int]] | None:
    """``(source, uses)`` for a name made by :func:`use_name`, else None."""
    m = _USE.match(name)
    return None if m is None else (m["source"], [int(k) for k in m["uses"].split("_")])


def _is_parameter(node: onnx.NodeProto, k: int, stored: dict[str, onnx.TensorProto]) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in _ELEMENTWISE:
        return len(node.input) == 2 and node.input[1 - k] not in stored
    return k in _PARAM_INPUTS.get(node.op_type, ())


def parameter_uses(model: onnx.ModelProto) -> dict[str, list[Use]]:
    """Shared tensors this pass unties, with their parameter-position reads in order."""
    g = model.graph
    stored = stored_tensors(model)
    interface = {i.name for i in g.input} | {o.name for o in g.output}
    uses: dict[str, list[Use]] = defaultdict(list)
    for node in g.node:
        for k, name in enumerate(node.input):
            if name in stored:
                if _is_parameter(node, k, stored):
                    uses[name].append((node, k))
    inits = {t.name for t in g.initializer}  # float Constant weights were lifted (LiftConstantsPass)
    out = {}
    for name, found in uses.items():
        t = stored[name]
        if len(found) >= 2 and name in inits and name not in interface and t.data_type in _FLOAT \
                and int(np.prod(t.dims, dtype=np.int64)) > 1:
            out[name] = found
    return out


class UntieParametersPass(Pass):
    """Give each parameter-position read of a shared float initializer its own ``Identity`` view,
    so equal values do not couple unrelated layers. Leaves shared the weights read as a
    MatMul/Conv/Gemm ``B`` or a Gather table (deliberate ties), integer and one-element tensors,
    graph inputs and outputs, and reads inside subgraphs.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = model.graph
        taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
        views: list[onnx.NodeProto] = []
        for source, found in parameter_uses(model).items():
            names = [use_name(source, [k]) for k in range(len(found))]
            if any(n in taken for n in names):
                continue  # already untied (or a clash with the model's own names): leave it
            for (node, k), name in zip(found, names):
                node.input[k] = name
                views.append(onnx.helper.make_node("Identity", [source], [name], name=f"{name}__view"))
        if views:  # views first: every reader comes after its view
            nodes = [onnx.NodeProto() for _ in g.node]
            for copy, node in zip(nodes, g.node):
                copy.CopyFrom(node)
            del g.node[:]
            g.node.extend(views + nodes)
        return PassResult(model, bool(views))
