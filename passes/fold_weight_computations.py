"""Fold weights that the model computes from other weights into initializers.

Some layers store a raw parameter and compute the weight they use from it on every run:
weight standardisation (timm's ``StdConv2d``/``ScaledStdConv2d`` in BiT ResNetV2 and NFNets: the
kernel reshaped to ``(1, O, I·k·k)``, normalised by a training-mode ``BatchNormalization`` and
reshaped back), weight normalisation (``g · v / ‖v‖``), or a bias with a slice overwritten
(Swin V2's ``qkv_bias[C:2C] = 0``, a ``ScatterND``). Exported without constant folding, the
computation stays in the graph, and it blocks pruning: a standardisation over the input channels
would change the kept weights' statistics, and ``ScatterND`` has no coupling rule. The computed
weight does not depend on the input, so it can be stored instead; the model computes the same.

Rules: a *computed weight* is a float tensor that is not stored, not a graph output, and read by
a node outside its own computation, whose computation (every producer up to stored tensors)
reads no graph input, runs only deterministic default-domain ops without subgraphs, reads a
float initializer of more than one element with as many elements as the result, and contains an
op that computes (not only ``Reshape``/``Transpose``/``Cast``/``Slice``/... of a weight). Each one
becomes an initializer of the same name holding the value onnxruntime computes for it (one run
for all of them), and the nodes nothing reads any more are removed. Running it again changes
nothing.
Refuses (leaves in place): tensors that depend on a graph input; pure layout of a weight (a
transposed or split weight, which the coupling rules follow); computed constants of another size
than every weight they read (a rotary table, a mask); integer tensors (shapes, indices);
``QuantizeLinear``/``DequantizeLinear`` and random ops; and every candidate of a model
onnxruntime cannot evaluate (logged).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper
from spa.passes.base import Pass, PassResult

from spa.model.graph import constant_walk
from spa.model.runtime import make_session

log = logging.getLogger(__name__)

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
#: Ops that only move, select or retype a weight: a computation of these alone is left to the rules.
_LAYOUT = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Cast", "CastLike", "Shape",
           "Size", "Gather", "Slice", "Split", "Concat", "Expand", "Constant", "ConstantOfShape", "Tile"}
#: Ops never folded: random values, and quantisation, whose int8 weights must stay int8.
_REFUSED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


class _Graph:
    """Producers and readers of the main graph, and which tensors are computed from stored ones."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.stored = {t.name: t for t in graph.initializer}
        self.stored.update({n.output[0]: n for n in graph.node if n.op_type == "Constant" and len(n.output) == 1})
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self._constant: dict[str, bool] = {}

    def constant(self, name: str) -> bool:
        """Whether ``name`` is computed from stored tensors only, by ops this pass may fold."""
        return constant_walk(name, self._inputs_if_foldable, self._constant)

    def _inputs_if_foldable(self, name: str) -> bool | list[str]:
        """True for a stored tensor, False when the producer cannot be folded, else its inputs."""
        if name in self.stored:
            return True
        node = self.producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type in _REFUSED or any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return False
        return [i for i in node.input if i]

    def cone(self, name: str) -> tuple[list[onnx.NodeProto], set[str]]:
        """The nodes that compute ``name`` and the stored tensors they read."""
        nodes: dict[str, onnx.NodeProto] = {}
        stored: set[str] = set()
        stack = [name]
        while stack:
            t = stack.pop()
            if not t or t in stored:
                continue
            if t in self.stored and not isinstance(self.stored[t], onnx.NodeProto):
                stored.add(t)
                continue
            node = self.producer[t]
            key = node.name or node.output[0]
            if key not in nodes:
                nodes[key] = node
                stack.extend(node.input)
        return list(nodes.values()), stored

    def candidates(self) -> list[str]:
        """Tensors that may be computed weights (the size check comes after evaluation). A node
        with several outputs in use qualifies only when each of them does (it is removed whole)."""
        found = []
        for node in self.graph.node:
            if node.op_type == "Constant" or node.domain not in ("", "ai.onnx"):
                continue
            used = [o for o in node.output if o and (o in self.readers or o in self.outputs)]
            mine = [o for o in used if self._candidate(o)]
            if mine and len(mine) == len(used):
                found += mine
        return found

    def _candidate(self, out: str) -> bool:
        if out in self.outputs or not self.constant(out):
            return False
        if not any(not self.constant(o) for r in self.readers.get(out, []) for o in r.output if o):
            return False  # read only by other constant nodes: not where the weight is used
        nodes, stored = self.cone(out)
        return any(n.op_type not in _LAYOUT for n in nodes) and any(self._weight(t) for t in stored)

    def _weight(self, name: str) -> bool:
        t = self.stored[name]
        return isinstance(t, onnx.TensorProto) and t.data_type in _FLOAT and int(np.prod(t.dims, dtype=np.int64)) > 1


def _evaluate(model: onnx.ModelProto, g: _Graph, names: list[str]) -> dict[str, np.ndarray]:
    """The values of ``names``, computed by onnxruntime from the stored tensors alone."""

    nodes: dict[int, onnx.NodeProto] = {}
    stored: set[str] = set()
    for name in names:
        cone, reads = g.cone(name)
        nodes.update({id(n): n for n in cone})
        stored |= reads
    order = [n for n in g.graph.node if id(n) in nodes]  # the graph's order is topological
    graph = onnx.helper.make_graph(order, "fold", [], [onnx.helper.make_empty_tensor_value_info(n) for n in names],
                                   initializer=[g.stored[t] for t in sorted(stored)])
    sub = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    session = make_session(sub)
    return dict(zip(names, session.run(names, {})))


def _remove_unread(graph: onnx.GraphProto, names: list[str]) -> None:
    """Remove the producers of ``names`` that nothing reads any more, then theirs (stored tensors too)."""
    outputs = {o.name for o in graph.output} | {i.name for i in graph.input}  # a declared input stays
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    producer = {o: n for n in graph.node for o in n.output if o}
    inits = {t.name: t for t in graph.initializer}
    pending = list(names)
    while pending:
        name = pending.pop()
        if readers.get(name, 0) or name in outputs:
            continue
        node = producer.get(name)
        if node is None:
            if name in inits:
                graph.initializer.remove(inits.pop(name))
            continue
        if any(readers.get(o, 0) or o in outputs for o in node.output if o):
            continue
        graph.node.remove(node)
        for o in node.output:
            producer.pop(o, None)
        for i in node.input:
            if i:
                readers[i] -= 1
                pending.append(i)


class FoldWeightComputationsPass(Pass):
    """Store weights the model computes from other weights (weight standardisation or
    normalisation, a ScatterND into a bias) as initializers of the same name, with the values
    onnxruntime computes. Leaves in place tensors that depend on a graph input, pure layout of a
    weight, constants of another size than their weights, integer tensors, quantization and
    random ops, and every candidate of a model onnxruntime cannot evaluate.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = _Graph(model.graph)
        names = g.candidates()
        if not names:
            return PassResult(model, False)
        try:
            values = _evaluate(model, g, names)
        except Exception as exc:  # noqa: BLE001 - a computation onnxruntime cannot run stays in the graph
            log.info("could not evaluate %d computed weights: %s", len(names), str(exc).splitlines()[0])
            return PassResult(model, False)
        good = set()
        for name in names:
            value = np.asarray(values[name])
            _, stored = g.cone(name)
            sizes = {int(np.prod(g.stored[t].dims, dtype=np.int64)) for t in stored if g._weight(t)}
            if value.dtype.kind == "f" and value.size in sizes:
                good.add(name)
        # A producer is replaced only when every output of it in use is folded.
        folded = [n for n in names if all(o in good for o in g.producer[n].output if o in names)]
        if not folded:
            return PassResult(model, False)
        for name in folded:
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(values[name]), name))
        inputs = []
        for node in {id(g.producer[n]): g.producer[n] for n in folded}.values():
            model.graph.node.remove(node)  # its other outputs are read by nothing (see candidates)
            inputs += [i for i in node.input if i]
        _remove_unread(model.graph, inputs)
        log.debug("folded %d computed weights into initializers: %s", len(folded), ", ".join(folded[:5]))
        return PassResult(model, True)
