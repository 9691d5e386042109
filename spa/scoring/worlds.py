"""Run a model a slice at a time and stop at every consumer, in one or two "worlds".

OBSPA needs each consumer's input on the same samples in

* the **original** world: the model as given, or, for synthetic inputs, with every
  BatchNormalization normalising by the statistics of the batch it sees (so that inputs unlike
  the training data still reach every layer in the range it was trained for); and
* the **pruned** world: the model with the removed channels masked (every sliced float tensor
  zeroed outside the kept indices, which computes what the pruned model computes) and the
  consumers already compensated. Its BatchNorms use the original world's batch statistics.

Sequential compensation fits each consumer to map its *pruned-world* input to its
*original-world* output, so each layer corrects what the layers before it lost. That needs the
consumers in topological order: :class:`Worlds` runs the nodes before the next consumer (in
both worlds, all batches), stops there, lets the caller install the consumer's new weights, then
goes on. Each slice is its own small onnxruntime session. Activations are kept only while a
later node or stop still reads them, so memory is what is live at the widest point of the graph
(times the samples), not every activation.

Nodes with subgraphs (If, Loop, Scan) can run in the original world (their outer-scope reads are
followed) but not be renamed into the pruned world: :func:`twin_supported` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from spa.analysis.consumers import Consumer
from spa.model.graph import ModelContext, attr_float, subgraph_reads
from spa.model.runtime import make_session

log = logging.getLogger(__name__)

PRUNED = "spa.pruned/"
STAT = "spa.bn/"
_NP_TO_ONNX = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE,
               np.dtype(np.float16): onnx.TensorProto.FLOAT16, np.dtype(np.int64): onnx.TensorProto.INT64,
               np.dtype(np.int32): onnx.TensorProto.INT32, np.dtype(np.bool_): onnx.TensorProto.BOOL,
               np.dtype(np.uint8): onnx.TensorProto.UINT8, np.dtype(np.int8): onnx.TensorProto.INT8}


@dataclass
class Stop:
    """A consumer and its input for every batch, in the original and (twin runs) pruned world."""

    consumer: Consumer
    x: list[np.ndarray]
    x_pruned: list[np.ndarray] | None = None


@dataclass
class PrunedWorld:
    """What differs in the pruned world: removed indices per stored tensor (zeroed) and the
    compensated consumers' weights."""

    #: stored tensor -> [(axis, removed indices), ...] (a conv weight has an output and an input axis)
    masks: dict[str, list[tuple[int, np.ndarray]]]
    #: initializer -> new value (compensated weights), in its original shape
    values: dict[str, np.ndarray]
    #: node name -> bias to give that node as input 2 (Conv, Gemm)
    biases: dict[str, np.ndarray]


def reads(node: onnx.NodeProto) -> list[str]:
    return [i for i in node.input if i] + subgraph_reads(node)


def twin_supported(ctx: ModelContext) -> bool:
    """True when no node has a subgraph (those cannot be renamed into the pruned world)."""
    return not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for n in ctx.model.graph.node for a in n.attribute)


def _reduce_mean(ctx: ModelContext, x: str, out: str, axes: list[int], keepdims: int, name: str,
                 statics: dict[str, np.ndarray]) -> onnx.NodeProto:
    if ctx.opset >= 18:
        axes_name = f"{STAT}axes/{','.join(map(str, axes))}"
        statics[axes_name] = np.array(axes, dtype=np.int64)
        return helper.make_node("ReduceMean", [x, axes_name], [out], name=name, keepdims=keepdims)
    return helper.make_node("ReduceMean", [x], [out], name=name, axes=axes, keepdims=keepdims)


def batch_stat_norm(ctx: ModelContext, node: onnx.NodeProto, statics: dict[str, np.ndarray]) -> list[onnx.NodeProto] | None:
    """A BatchNormalization that normalises with its batch's mean and (biased) variance, which
    it also writes to ``spa.bn/<node>/mean`` and ``/var``; None when the input rank is unknown."""
    rank = ctx.rank(node.input[0])
    if rank is None or rank < 2 or len(node.input) < 5:
        return None
    x, p = node.input[0], f"{STAT}{node.name}/"
    axes = [0, *range(2, rank)]
    eps = attr_float(node, "epsilon", 1e-5)
    return [
        _reduce_mean(ctx, x, p + "mean", axes, 0, p + "ReduceMean", statics),
        _reduce_mean(ctx, x, p + "mean_k", axes, 1, p + "ReduceMean_k", statics),
        helper.make_node("Sub", [x, p + "mean_k"], [p + "centred"], name=p + "Sub"),
        helper.make_node("Mul", [p + "centred", p + "centred"], [p + "square"], name=p + "Mul"),
        _reduce_mean(ctx, p + "square", p + "var", axes, 0, p + "ReduceMean_var", statics),
        helper.make_node("BatchNormalization", [x, node.input[1], node.input[2], p + "mean", p + "var"],
                         list(node.output[:1]), name=node.name, epsilon=eps),
    ]


class Worlds:
    """The original world, and optionally the pruned one, stopped at every consumer.

    ``batches`` are the feeds; ``batch_stats`` makes the original world's BatchNorms use batch
    statistics. Iterate :meth:`stops`; in a twin run, call :meth:`install` at a stop to give the
    consumer its compensated weights before the pruned world runs it.
    """

    def __init__(self, ctx: ModelContext, consumers: list[Consumer], batches: list[dict[str, np.ndarray]], *,
                 batch_stats: bool, pruned: PrunedWorld | None = None, device: str = "cpu",
                 outputs: bool = False) -> None:
        self.ctx = ctx
        #: keep the model's outputs for :meth:`finish`
        self.outputs = [o.name for o in ctx.model.graph.output] if outputs else []
        self._cache: list[dict[str, np.ndarray]] = []
        self._remaining: dict[str, int] = {}
        self._pos = 0
        self.batches = batches
        self.pruned = pruned
        self.device = device
        bundles = _bundles(ctx)
        self.index = {node.name: k for k, (_, node) in enumerate(bundles)}
        self.consumers = sorted(consumers, key=lambda c: self.index[c.node.name])
        self.statics: dict[str, np.ndarray] = {}  # helper constants (ReduceMean axes)
        self._stat_bns: set[str] = set()
        self.nodes: list[list[onnx.NodeProto]] = []
        for deps, node in bundles:
            orig = batch_stat_norm(ctx, node, self.statics) if batch_stats and node.op_type == "BatchNormalization" \
                else None
            if orig is not None:
                self._stat_bns.add(node.name)
            world = [*deps, *(orig if orig is not None else [node])]
            if pruned is not None:
                world += [self._pruned_node(n) for n in (*deps, node)]
            self.nodes.append(world)

    # ---- the pruned world's names ------------------------------------------------------
    def pname(self, t: str) -> str:
        """The pruned world's name for tensor ``t``."""
        if not t or self.pruned is None:
            return t
        if t in self.pruned.masks or t in self.pruned.values:
            return PRUNED + "value/" + t
        if t in self.ctx.initializers or t in self.ctx.graph_inputs:
            return t
        return PRUNED + t

    def _pruned_node(self, node: onnx.NodeProto) -> onnx.NodeProto:
        assert self.pruned is not None
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = PRUNED + node.name
        new.input[:] = [self.pname(i) for i in node.input]
        new.output[:] = [PRUNED + o if o else o for o in node.output]
        if node.name in self._stat_bns:
            new.input[3], new.input[4] = f"{STAT}{node.name}/mean", f"{STAT}{node.name}/var"
            for a in list(new.attribute):
                if a.name == "training_mode":
                    new.attribute.remove(a)
        if node.name in self.pruned.biases:
            while len(new.input) < 3:
                new.input.append("")
            new.input[2] = PRUNED + "bias/" + node.name
        return new

    def static(self, name: str) -> np.ndarray | onnx.TensorProto | None:
        """A constant input of a world's node: an initializer, a pruned-world value, a helper."""
        if name in self.statics:
            return self.statics[name]
        if name in self.ctx.initializers:
            return self.ctx.initializers[name]
        if self.pruned is None or not name.startswith(PRUNED):
            return None
        rest = name[len(PRUNED):]
        if rest.startswith("bias/"):
            return self.pruned.biases.get(rest[5:])
        if not rest.startswith("value/"):
            return None
        t = rest[6:]
        value = self.pruned.values[t] if t in self.pruned.values else self.ctx.constant_value(t)
        if value is None:
            return None
        out = np.array(value, copy=True)
        for axis, removed in self.pruned.masks.get(t, ()):
            if out.dtype.kind == "f" and removed.size:
                index: list[slice | np.ndarray] = [slice(None)] * out.ndim
                index[axis] = removed
                out[tuple(index)] = 0
        return out

    def install(self, consumer: Consumer, weight: np.ndarray, bias: np.ndarray | None) -> None:
        """Give ``consumer`` its compensated weight (initializer shape) and bias in the pruned world."""
        assert self.pruned is not None
        self.pruned.values[consumer.weight] = weight
        if bias is None:
            return
        bias = np.asarray(bias, dtype=weight.dtype)
        if consumer.kind in ("conv", "gemm"):
            self.pruned.biases[consumer.node.name] = bias
        elif consumer.bias is not None:
            self.pruned.values[consumer.bias] = bias

    # ---- running -----------------------------------------------------------------------
    def stops(self) -> Iterator[Stop]:
        """Every consumer, in topological order, with its inputs for all batches."""
        stop_at = [self.index[c.node.name] for c in self.consumers]
        names = [(c.x, self.pname(c.x) if self.pruned is not None else None) for c in self.consumers]
        remaining: dict[str, int] = {}
        for world in self.nodes:
            for node in world:
                for r in reads(node):
                    remaining[r] = remaining.get(r, 0) + 1
        for a, b in [*names, *((o, self.pname(o) if self.pruned is not None else None) for o in self.outputs)]:
            for t in (a, b):
                if t:
                    remaining[t] = remaining.get(t, 0) + 1
        cache: list[dict[str, np.ndarray]] = [dict(b) for b in self.batches]
        self._cache, self._remaining, self._pos = cache, remaining, 0
        for c, idx, (xa, xb) in zip(self.consumers, stop_at, names):
            if idx > self._pos:
                self._run(self.nodes[self._pos:idx], cache, remaining)
                self._pos = idx
            yield Stop(c, [v[xa] for v in cache], [v[xb] for v in cache] if xb else None)
            for t in (xa, xb):
                if t:
                    _release(t, cache, remaining)

    def finish(self) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """After the last stop (``outputs=True``, a twin run): run the rest of the model and return,
        per batch, the model's outputs in the original and in the pruned world."""
        assert self.pruned is not None and self.outputs
        if self._pos < len(self.nodes):
            self._run(self.nodes[self._pos:], self._cache, self._remaining)
            self._pos = len(self.nodes)
        return [({o: v[o] for o in self.outputs if o in v},
                 {o: v[self.pname(o)] for o in self.outputs if self.pname(o) in v}) for v in self._cache]

    def _run(self, worlds: list[list[onnx.NodeProto]], cache: list[dict[str, np.ndarray]],
             remaining: dict[str, int]) -> None:
        """Run ``worlds`` (per original node: its original-world nodes, then its pruned copy) for
        every batch, keeping the outputs that a later node or stop reads."""
        nodes = [n for world in worlds for n in world]
        produced: set[str] = set()
        counts: dict[str, int] = {}
        inputs: list[str] = []
        inits: list[onnx.TensorProto] = []
        for n in nodes:
            for r in reads(n):
                if r not in counts and r not in produced:
                    value = self.static(r)
                    if value is not None:
                        inits.append(value if isinstance(value, onnx.TensorProto) else numpy_helper.from_array(value, r))
                    elif r in cache[0]:
                        inputs.append(r)
                    else:
                        raise RuntimeError(f"tensor '{r}' is neither computed nor constant")
                counts[r] = counts.get(r, 0) + 1
            produced.update(o for o in n.output if o)
        outputs = [o for n in nodes for o in n.output if o and remaining.get(o, 0) > counts.get(o, 0)]
        if outputs:
            graph = helper.make_graph(
                nodes, "spa_slice",
                [helper.make_tensor_value_info(i, _NP_TO_ONNX.get(cache[0][i].dtype, onnx.TensorProto.FLOAT), None)
                 for i in inputs],
                [helper.make_empty_tensor_value_info(o) for o in outputs], initializer=inits)
            model = helper.make_model(graph, opset_imports=list(self.ctx.model.opset_import),
                                      ir_version=self.ctx.model.ir_version)
            model.functions.extend(self.ctx.model.functions)
            sess = make_session(model, self.device)
            for values in cache:
                values.update(zip(outputs, sess.run(outputs, {i: values[i] for i in inputs})))
            del sess
        for r, k in counts.items():
            remaining[r] = remaining.get(r, 0) - k
            if remaining[r] <= 0:
                for values in cache:
                    values.pop(r, None)


def _bundles(ctx: ModelContext) -> list[tuple[list[onnx.NodeProto], onnx.NodeProto]]:
    """The nodes that depend on a graph input, in order, each with the constant-only nodes it
    needs first (e.g. the ``Transpose`` of a MatMul's weight). Running a constant node together
    with its first reader means a pruned-world weight installed at a stop is the one it reads."""
    dynamic = set(ctx.graph_inputs)
    constant: dict[str, onnx.NodeProto] = {}
    for node in ctx.model.graph.node:
        if any(r in dynamic for r in reads(node)):
            dynamic.update(o for o in node.output if o)
        else:
            for o in node.output:
                if o:
                    constant[o] = node
    done: set[str] = set()

    def needs(node: onnx.NodeProto, acc: list[onnx.NodeProto]) -> None:
        for r in reads(node):
            dep = constant.get(r)
            if dep is not None and dep.name not in done:
                done.add(dep.name)
                needs(dep, acc)
                acc.append(dep)

    out = []
    for node in ctx.model.graph.node:
        if any(r in dynamic for r in reads(node)):
            acc: list[onnx.NodeProto] = []
            needs(node, acc)
            out.append((acc, node))
    return out


def _release(t: str, cache: list[dict[str, np.ndarray]], remaining: dict[str, int]) -> None:
    """One read of ``t`` is done; drop it from every batch when no read is left."""
    remaining[t] -= 1
    if remaining[t] <= 0:
        for values in cache:
            values.pop(t, None)


def peak_activation_bytes(ctx: ModelContext) -> int:
    """Bytes per sample of the activations alive at once when the nodes run in order (from
    static shapes; symbolic sizes count 1). What :class:`Worlds` caches is at most this much
    per sample and world."""
    last: dict[str, int] = {}
    for k, node in enumerate(ctx.model.graph.node):
        for r in reads(node):
            last[r] = k
    live: dict[str, int] = {}
    peak = 0
    for k, node in enumerate(ctx.model.graph.node):
        for o in node.output:
            shape = ctx.shapes.get(o)
            if o and shape is not None and not ctx.is_stored(o):
                live[o] = 4 * int(np.prod([d or 1 for d in shape], dtype=np.int64))
        peak = max(peak, sum(live.values()))
        for r in reads(node):
            if last.get(r) == k:
                live.pop(r, None)
    return peak
