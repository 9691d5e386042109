"""A read-only index over an ONNX graph: producers, consumers, constants and shapes.

The index is built once per model (after shape inference) and handed to the coupling rules,
the criteria and the rewrite passes, so none of them walks the protobuf on its own.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import onnx
from onnx import numpy_helper

from spa.model.io import default_opset

log = logging.getLogger(__name__)

Space = tuple[str, int]
"""A channel space: ``(tensor name, axis)`` with a non-negative axis."""

Shape = tuple[int | None, ...]

#: Decoded stored tensors are cached up to this many bytes in all (see :meth:`ModelContext.array`);
#: arrays up to ``_SMALL_ARRAY_BYTES`` (shape constants, biases) are always cached.
ARRAY_CACHE_BYTES = 512 << 20
_SMALL_ARRAY_BYTES = 1 << 20

_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


def known(shape: Sequence[int | None] | None) -> tuple[int, ...] | None:
    """``shape`` when every size in it is known, else None (a static shape, typed as one)."""
    if shape is None:
        return None
    sizes = tuple(d for d in shape if d is not None)
    return sizes if len(sizes) == len(shape) else None


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of attribute ``name`` of ``node``, or ``default`` (untyped: whatever the
    attribute holds, bytes for a string; prefer :func:`attr_int` and its siblings)."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _attribute(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


@overload
def attr_int(node: onnx.NodeProto, name: str, default: int) -> int: ...
@overload
def attr_int(node: onnx.NodeProto, name: str, default: None) -> int | None: ...
def attr_int(node: onnx.NodeProto, name: str, default: int | None) -> int | None:
    """Integer attribute ``name`` of ``node``, or ``default`` when absent (None for an
    optional attribute such as ``Shape``'s ``end``, whose absence means "to the end")."""
    a = _attribute(node, name)
    return default if a is None else int(a.i)


def attr_float(node: onnx.NodeProto, name: str, default: float) -> float:
    """Float attribute ``name`` of ``node``, or ``default`` when absent."""
    a = _attribute(node, name)
    return default if a is None else float(a.f)


def attr_ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    """Integer-list attribute ``name`` of ``node``, or None when absent."""
    a = _attribute(node, name)
    return None if a is None else [int(v) for v in a.ints]


def attr_floats(node: onnx.NodeProto, name: str) -> list[float] | None:
    """Float-list attribute ``name`` of ``node``, or None when absent."""
    a = _attribute(node, name)
    return None if a is None else [float(v) for v in a.floats]


@overload
def attr_str(node: onnx.NodeProto, name: str, default: str) -> str: ...
@overload
def attr_str(node: onnx.NodeProto, name: str, default: None = None) -> str | None: ...
def attr_str(node: onnx.NodeProto, name: str, default: str | None = None) -> str | None:
    """String attribute ``name`` of ``node`` (decoded), or ``default`` when absent."""
    a = _attribute(node, name)
    return default if a is None else a.s.decode("utf-8", "replace")


def attr_strs(node: onnx.NodeProto, name: str) -> list[str] | None:
    """String-list attribute ``name`` of ``node`` (each decoded), or None when absent."""
    a = _attribute(node, name)
    return None if a is None else [v.decode("utf-8", "replace") for v in a.strings]


def attr_tensor(node: onnx.NodeProto, name: str) -> onnx.TensorProto | None:
    """Tensor attribute ``name`` of ``node``, or None when absent."""
    a = _attribute(node, name)
    return None if a is None else a.t


def node_label(node: onnx.NodeProto) -> str:
    """``OpType 'name'`` for messages."""
    return f"{node.op_type} '{node.name}'"


@dataclass
class ModelContext:
    """Index of one model. Node objects are those of ``model`` (mutating them is visible)."""

    model: onnx.ModelProto
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    shapes: dict[str, Shape] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    constant_nodes: dict[str, onnx.NodeProto] = field(default_factory=dict)
    #: ``Identity(stored tensor)`` outputs -> that tensor. The TorchScript exporter merges equal
    #: initializers into one and hands each user an Identity of it; each such *view* is sliced on
    #: its own (it is materialised as an initializer when rewritten), so equal values never
    #: couple unrelated layers.
    views: dict[str, str] = field(default_factory=dict)
    graph_inputs: list[str] = field(default_factory=list)
    graph_outputs: list[str] = field(default_factory=list)
    opset: int = 0
    #: Head granularity for Reshapes that split a channel axis: "whole", "dims" or "none"
    #: (see :mod:`spa.analysis.rules.attention`).
    head_mode: str = "whole"
    node_index: dict[str, int] = field(default_factory=dict)
    #: Concrete shapes seen in the two probe runs, for tensors whose static shape has holes.
    sample_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    #: Folded channel axes: ``(tensor, axis) -> H`` where the axis is ``B·H`` (a dynamic batch
    #: merged with ``H`` channels, index ``b·H + h``); its channel index is ``h``.
    fold_dims: dict[Space, int] = field(default_factory=dict)
    #: Tensors whose dynamic axis 0 is the batch times a fixed number (Swin's ``B·windows``):
    #: that number, seen in the probe runs (:func:`spa.model.shapes.complete_with_runtime`); MACs use it.
    batch_multiples: dict[str, int] = field(default_factory=dict)
    #: Outer-scope tensors read inside a node's subgraphs (If, Loop, Scan) -> those nodes. They
    #: are not ``consumers``: no coupling rule sees inside a subgraph, so such a read blocks.
    subgraph_readers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    _arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _const_memo: dict[str, bool] = field(default_factory=dict)
    _folded: dict[str, np.ndarray | None] = field(default_factory=dict)

    @classmethod
    def build(cls, model: onnx.ModelProto, inferred: onnx.ModelProto | None = None) -> ModelContext:
        """Index ``model``; shapes are read from ``inferred`` (a shape-inferred copy) if given."""

        ctx = cls(model=model, opset=default_opset(model))
        g = model.graph
        _name_nodes(g)
        for init in g.initializer:
            ctx.initializers[init.name] = init
            ctx.shapes[init.name] = tuple(int(d) for d in init.dims)
            ctx.dtypes[init.name] = init.data_type
        for k, node in enumerate(g.node):
            ctx.node_index[node.name] = k
            for o in node.output:
                if o:
                    ctx.producer[o] = node
            for i in node.input:
                if i:
                    ctx.consumers[i].append(node)
            for name in dict.fromkeys(subgraph_reads(node)):
                ctx.subgraph_readers.setdefault(name, []).append(node)
            if node.op_type == "Constant" and node.output and _constant_tensor(node) is not None:
                ctx.constant_nodes[node.output[0]] = node
        ctx.graph_inputs = [i.name for i in g.input if i.name not in ctx.initializers]
        ctx.graph_outputs = [o.name for o in g.output]
        for node in g.node:
            src = node.input[0] if node.op_type == "Identity" and node.input else ""
            src = ctx.views.get(src, src)
            if (src in ctx.initializers or src in ctx.constant_nodes) and node.output[0] not in ctx.graph_outputs:
                ctx.views[node.output[0]] = src
        src = inferred if inferred is not None else model
        for vi in list(src.graph.value_info) + list(src.graph.input) + list(src.graph.output):
            shape, dtype = _value_info_shape(vi)
            if vi.name not in ctx.initializers:
                if shape is not None:
                    ctx.shapes[vi.name] = shape
                if dtype:
                    ctx.dtypes[vi.name] = dtype
        for name, node in ctx.constant_nodes.items():
            t = _constant_tensor(node)
            assert t is not None
            ctx.shapes[name] = tuple(int(d) for d in t.dims)
            ctx.dtypes[name] = t.data_type
        for view, src in ctx.views.items():
            ctx.shapes[view], ctx.dtypes[view] = ctx.shapes[src], ctx.dtypes[src]
        return ctx

    # ---- tensors -----------------------------------------------------------------------
    def is_stored(self, name: str) -> bool:
        """True for an initializer, a ``Constant`` output or a view (a tensor we can slice)."""
        return name in self.initializers or name in self.constant_nodes or name in self.views

    def array(self, name: str) -> np.ndarray:
        """The value of an initializer or Constant output (read-only).

        Decoded arrays are cached until they add up to :data:`ARRAY_CACHE_BYTES`; beyond that,
        only small ones are. A decoded array is a copy of the protobuf's bytes, so caching every
        weight of a large model would hold its weights twice.
        """
        if name in self.views:
            return self.array(self.views[name])
        if name in self._arrays:
            return self._arrays[name]
        if name in self.initializers:
            arr = numpy_helper.to_array(self.initializers[name])
        elif name in self.constant_nodes:
            t = _constant_tensor(self.constant_nodes[name])
            assert t is not None
            arr = numpy_helper.to_array(t)
        else:
            raise KeyError(name)
        arr.setflags(write=False)
        cached = sum(a.nbytes for a in self._arrays.values()) if arr.nbytes > _SMALL_ARRAY_BYTES else 0
        if arr.nbytes <= _SMALL_ARRAY_BYTES or cached + arr.nbytes <= ARRAY_CACHE_BYTES:
            self._arrays[name] = arr
        return arr

    def is_constant(self, name: str) -> bool:
        """True when ``name`` is computed from stored tensors only (no graph input reaches it)."""
        return constant_walk(name, self._constant_inputs, self._const_memo)

    def _constant_inputs(self, name: str) -> bool | list[str]:
        """Whether ``name`` is constant when that follows from its producer alone, else the
        inputs that decide it (all of them must be constant)."""
        if self.is_stored(name):
            return True
        if name in self.graph_inputs or name not in self.producer:
            return False
        node = self.producer[name]
        if node.op_type == "Shape" or self._static_shape_pick(node) is not None:
            # The static part of a shape is known here; pruning rewrites what depends on it.
            return node.op_type != "Shape" or self._static_shape_slice(node) is not None
        if node.op_type in _NONDETERMINISTIC:
            return False
        inputs = [i for i in node.input if i]
        return inputs[:1] if node.op_type == "CastLike" else inputs  # CastLike's second input only gives the type

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of a stored tensor, or of a small computed constant (folded once)."""
        if self.is_stored(name):
            return self.array(name)
        if name not in self._folded:
            self._folded[name] = self._fold(name)
        return self._folded[name]

    def _fold(self, name: str) -> np.ndarray | None:
        """Evaluate a constant subgraph of at most 64 nodes reading at most 65536 stored values."""
        if not self.is_constant(name):
            return None
        cone: list[onnx.NodeProto] = []
        stored: set[str] = set()
        stack, seen = [name], set()
        while stack:
            t = stack.pop()
            if t in seen or not t:
                continue
            seen.add(t)
            if t in self.initializers:
                stored.add(t)
                continue
            node = self._shape_as_constant(self.producer[t])
            cone.append(node)
            if len(cone) > 64:
                return None
            inputs = [i for i in node.input if i]
            if node.op_type == "CastLike":
                inputs = inputs[:1]  # the second input only gives the type
            stack.extend(inputs)
        if sum(math.prod(1 if d is None else d for d in self.shapes.get(t) or (1,)) for t in stored) > 65536:
            return None
        from onnx.reference import ReferenceEvaluator

        order = [self._foldable(n) for n in sorted(cone, key=lambda n: self.node_index.get(n.name, -1))]
        graph = onnx.helper.make_graph(
            order, "fold", [], [onnx.helper.make_empty_tensor_value_info(name)],
            initializer=[self.initializers[t] for t in stored],
        )
        opsets = {imp.domain: imp.version for imp in self.model.opset_import}
        try:
            (value,) = ReferenceEvaluator(graph, opsets=opsets, verbose=0).run(None, {})
        except Exception:  # noqa: BLE001 - an op the reference runtime lacks: leave it unknown
            log.debug("cannot fold constant %s", name, exc_info=True)
            return None
        value = np.asarray(value)
        if self.shapes.get(name) is None or None in (self.shapes.get(name) or ()):
            self.shapes[name] = tuple(int(d) for d in value.shape)
        return value

    def _shape_as_constant(self, node: onnx.NodeProto) -> onnx.NodeProto:
        """``Shape(w)`` of a fully known shape is a constant: fold it without reading ``w``."""
        value = self._static_shape_slice(node) if node.op_type == "Shape" else self._static_shape_pick(node)
        if value is None:
            return node
        return onnx.helper.make_node("Constant", [], list(node.output), name=node.name,
                                     value=numpy_helper.from_array(value))

    def _static_shape_pick(self, node: onnx.NodeProto) -> np.ndarray | None:
        """``Gather(Shape(x), i)`` of a static size of ``x`` (a dynamic batch elsewhere is fine)."""
        if node.op_type != "Gather" or attr_int(node, "axis", 0) != 0:
            return None
        shape_node = self.producer.get(node.input[0])
        if shape_node is None or shape_node.op_type != "Shape" or node.input[1] not in self.initializers \
                and node.input[1] not in self.constant_nodes:
            return None
        shape = self.shapes.get(shape_node.input[0])
        if shape is None:
            return None
        start = attr_int(shape_node, "start", 0)
        dims = shape[slice(start, attr_int(shape_node, "end", None))]
        idx = self.array(node.input[1])
        picked = [dims[int(i)] for i in idx.reshape(-1)] if all(-len(dims) <= int(i) < len(dims) for i in idx.reshape(-1)) else [None]
        if None in picked:
            return None
        return np.array(picked, dtype=np.int64).reshape(idx.shape)

    def _static_shape_slice(self, node: onnx.NodeProto) -> np.ndarray | None:
        """What ``Shape`` node returns, when every size it reads is static; else None."""
        shape = self.shapes.get(node.input[0])
        if shape is None:
            return None
        start = attr_int(node, "start", 0)
        part = shape[slice(start, attr_int(node, "end", None))]
        return None if None in part else np.array(part, dtype=np.int64)

    def _foldable(self, node: onnx.NodeProto) -> onnx.NodeProto:
        """CastLike reads only the type of its second input: fold it as a Cast."""
        if node.op_type != "CastLike" or node.input[1] not in self.dtypes:
            return node
        return onnx.helper.make_node("Cast", [node.input[0]], list(node.output), to=self.dtypes[node.input[1]])

    def shape(self, name: str) -> Shape | None:
        s = self.shapes.get(name)
        if (s is None or None in s) and name not in self._folded and self.is_constant(name):
            self.constant_value(name)  # folding fills in the shape
            s = self.shapes.get(name)
        return s

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def dim(self, name: str, axis: int) -> int | None:
        """The static size of ``axis`` of ``name``, or ``None`` when unknown or symbolic."""
        s = self.shape(name)
        if s is None or axis >= len(s) or axis < 0:
            return None
        if s[axis] is None and (name, axis) in self.fold_dims:
            return self.fold_dims[(name, axis)]  # a folded B·H axis carries H channels
        return s[axis]

    def is_folded(self, space: Space) -> bool:
        """True for a dynamic ``B·H`` axis that carries ``H`` channels (see ``fold_dims``)."""
        s = self.shape(space[0])
        return space in self.fold_dims and s is not None and space[1] < len(s) and s[space[1]] is None

    def is_interface(self, name: str) -> bool:
        return name in self.graph_inputs or name in self.graph_outputs

    def touching(self, name: str) -> list[onnx.NodeProto]:
        """Every node that writes or reads ``name``."""
        nodes = list(self.consumers.get(name, ()))
        if name in self.producer:
            nodes.insert(0, self.producer[name])
        return nodes


def subgraph_reads(node: onnx.NodeProto) -> list[str]:
    """Outer-scope names read inside ``node``'s subgraphs (nested ones included), in order."""
    out: list[str] = []
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            inner = {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                for i in [*n.input, *subgraph_reads(n)]:
                    if i and i not in inner:
                        out.append(i)
                inner.update(o for o in n.output if o)
    return out


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every unnamed node a unique name so reports and ``--exclude`` can refer to it."""
    used = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return a.t
    return None


def _value_info_shape(vi: onnx.ValueInfoProto) -> tuple[Shape | None, int]:
    t = vi.type
    if not t.HasField("tensor_type"):
        return None, 0
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return None, tt.elem_type
    dims: list[int | None] = []
    for d in tt.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else None)
    return tuple(dims), tt.elem_type


def constant_walk(name: str, inputs_of: Callable[[str], bool | list[str]], memo: dict[str, bool]) -> bool:
    """Whether ``name`` is constant, where ``inputs_of(t)`` is True or False for a tensor it can
    decide alone, else the tensors ``t`` is computed from; answers are kept in ``memo``.

    Walked with an explicit stack, not recursion: a deep network's chain of activations would
    exceed Python's recursion limit. Inputs are visited one at a time, so the walk stops at the
    first input that is not constant; a cycle (a malformed graph) is not constant.
    """
    stack, on_stack = [name], {name}
    while stack:
        t = stack[-1]
        if t not in memo:
            inputs = inputs_of(t)
            if isinstance(inputs, bool):
                memo[t] = inputs
            elif any(memo.get(i) is False for i in inputs):
                memo[t] = False
            else:
                todo = next((i for i in inputs if i not in memo), None)
                if todo is None or todo in on_stack:
                    memo[t] = todo is None
                else:
                    stack.append(todo)
                    on_stack.add(todo)
                    continue
        stack.pop()
        on_stack.discard(t)
    return memo[name]
