"""Replace a Gather that reads a flattened tensor back in its own order by an Identity.

The dynamo exporter lowers ``as_strided`` (which torch uses for ``permute`` and ``view`` of
some contiguous tensors, e.g. ConvNeXt's LayerNorm2d on a pooled ``(N, C, 1, 1)`` map) to
``Gather(Reshape(x, [-1]), idx)``, with ``idx`` computed at run time from ``Range``, ``Mul``
and ``Add`` of the sizes and strides. Literal channel counts hide in that arithmetic, and a
gather along a flattened axis has no channel axis to follow, so the group of ``x`` would be
blocked. When the gather only copies ``x`` in its own order, it is ``x``.

Rules: a ``Gather`` with ``axis = 0`` whose data is ``Reshape(x, [-1])`` (a stored constant
target) becomes ``Identity(x)`` (same output name) when two onnxruntime runs of the model, with
its dynamic input sizes set to 2 and then to 3, both give ``idx == arange(x.size).reshape(x.shape)``.
The Reshape and the index arithmetic that nothing else reads are removed. Running it again
changes nothing.
Refuses (leaves in place) any other gather: indices that reorder, repeat or skip elements (a
real strided view: a transposed copy, a diagonal, overlapping windows), a target other than
``[-1]``, ``axis != 0``, and every candidate of a model onnxruntime cannot run (logged).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper
from spa.passes.base import Pass, PassResult

from spa.model.runtime import input_specs, random_inputs, run
from spa.model.shapes import ShapeProbe

log = logging.getLogger(__name__)


def _constant_ints(graph: onnx.GraphProto, name: str) -> list[int] | None:
    """The value of an integer initializer or ``Constant`` node named ``name``, else None."""
    for t in graph.initializer:
        if t.name == name:
            return [int(v) for v in numpy_helper.to_array(t).reshape(-1)]
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return [int(v) for v in numpy_helper.to_array(a.t).reshape(-1)]
                if a.name == "value_ints":
                    return [int(v) for v in a.ints]
                if a.name == "value_int":
                    return [int(a.i)]
    return None


def _candidates(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, str]]:
    """``(gather, x)`` for every ``Gather(Reshape(x, [-1]), idx)`` along axis 0."""
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx"):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        flat = producer.get(node.input[0])
        if axis != 0 or flat is None or flat.op_type != "Reshape":
            continue
        if _constant_ints(graph, flat.input[1]) == [-1]:
            found.append((node, flat.input[0]))
    return found


def _probe_feeds(model: onnx.ModelProto, size: int) -> dict[str, np.ndarray]:
    shapes = {name: [d if isinstance(d, int) and d > 0 else size for d in dims]
              for name, dims, _ in input_specs(model)}
    return random_inputs(model, seed=0, shapes=shapes)


def _identity_gathers(model: onnx.ModelProto, candidates: list[tuple[onnx.NodeProto, str]]) -> list[int]:
    """Positions in ``candidates`` whose indices are the identity in both probe runs."""

    tensors = [t for node, x in candidates for t in (node.input[1], x)]
    try:
        probe = ShapeProbe(model, tensors)
        runs = [run(probe, _probe_feeds(model, size)) for size in (2, 3)]
    except Exception as exc:  # noqa: BLE001 - a model onnxruntime cannot run keeps its gathers
        log.info("could not run the model to check %d flattened gathers: %s", len(candidates),
                 str(exc).splitlines()[0])
        return []
    same = []
    for k, (node, x) in enumerate(candidates):
        if all(r[node.input[1]].shape == r[x].shape
               and np.array_equal(r[node.input[1]], np.arange(r[x].size).reshape(r[x].shape)) for r in runs):
            same.append(k)
    return same


def _remove_dead(graph: onnx.GraphProto, names: list[str]) -> None:
    """Remove the producers of ``names`` (and their inputs' producers) that nothing reads any more."""
    outputs = {o.name for o in graph.output}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in outputs or any(name in n.input for n in graph.node):
            continue
        node = next((n for n in graph.node if name in n.output), None)
        if node is None or any(o in outputs or any(o in n.input for n in graph.node) for o in node.output if o):
            continue
        graph.node.remove(node)
        pending.extend(i for i in node.input if i)


class FoldIdentityGatherPass(Pass):
    """Replace ``Gather(Reshape(x, [-1]), idx)`` along axis 0 by ``Identity(x)`` when two probe
    runs show ``idx`` copies ``x`` in its own order, and drop the dead index arithmetic. Leaves in
    place any gather that reorders, repeats or skips elements, other targets or axes, and every
    candidate of a model onnxruntime cannot run.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = model.graph
        candidates = _candidates(g)
        if not candidates:
            return PassResult(model, False)
        folded = _identity_gathers(model, candidates)
        for k in folded:
            node, x = candidates[k]
            dropped = list(node.input)
            identity = onnx.helper.make_node("Identity", [x], list(node.output), name=node.name)
            node.CopyFrom(identity)
            _remove_dead(g, dropped)
            log.debug("'%s' gathers '%s' in its own order: now an Identity", node.name, x)
        return PassResult(model, bool(folded))
