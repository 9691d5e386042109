"""Shapes: ONNX shape inference, completed by a real onnxruntime run where it leaves holes.

Static inference cannot see through some exporter patterns (a Pad whose pads are computed
from the input's rank, a Resize whose sizes come from a Shape chain). For those tensors SPA
runs the model twice in onnxruntime (at the two sets of sizes of :mod:`spa.model.sizes`), reading the
holes as extra outputs: a size that is the same in both runs is static, one that differs stays
unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from spa.model.graph import FLOAT_TYPES, ModelContext, Shape
from spa.model.io import weightless
from spa.model.runtime import input_specs, make_session, random_inputs, run

log = logging.getLogger(__name__)

# Beyond this many elements of float weights, a model is not run just to complete its shapes.
# The run reads no weights (see ShapeProbe), so only its arithmetic grows with the model.
_MAX_PARAMS_FOR_RUN = 20_000_000_000



#: Float weights a shape probe feeds as zeros instead of storing (numpy and onnxruntime share them).
_ZERO_FED = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16}


class ShapeProbe:
    """An onnxruntime session that runs ``model`` only to see the shapes of ``tensors``.

    Float initializers over 1024 elements become graph inputs fed with zeros: no shape in a
    model depends on float weight values (only ``NonZero`` of a weight would), and the zeros are
    never written, so the OS backs them with its shared zero page. Neither the weights nor their
    copies are serialized or held, which keeps shape probing of a multi-GB model at the cost of
    its arithmetic at tiny input sizes. ``run`` takes the same feeds as a session of ``model``.
    """

    def __init__(self, model: onnx.ModelProto, tensors: list[str], device: str = "cpu") -> None:
        light = weightless(model, keep=lambda t: t.data_type not in _ZERO_FED)
        existing = {o.name for o in light.graph.output}
        light.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in existing)
        # Basic optimisations only: onnxruntime 1.31's full level (its NCHWc layout transformer)
        # drops a requested Conv output when the Conv's weight is fed as an input and an Add
        # follows (timm coatnet_nano_rw_224, dynamo export, after pruning).
        self.session = make_session(light, device, basic=True)
        stored = {t.name: t for t in model.graph.initializer}
        self.zeros = {i.name: np.zeros([int(d) for d in stored[i.name].dims], _ZERO_FED[stored[i.name].data_type])
                      for i in self.session.get_inputs() if i.name in stored}

    def get_outputs(self) -> list[Any]:
        return self.session.get_outputs()

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[Any]:
        return self.session.run(names, {**feeds, **self.zeros})


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference with data propagation (on a weightless copy); falls back to the model's
    own value_info."""
    try:
        return onnx.shape_inference.infer_shapes(weightless(model), data_prop=True)
    except Exception as exc:  # noqa: BLE001 - inference errors come in many types
        log.warning("shape inference failed (%s); using the shapes stored in the model", exc)
        return model


_SEQUENCE_OUTPUTS = {"SplitToSequence", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SequenceEmpty",
                     "SequenceMap"}


def has_holes(ctx: ModelContext) -> bool:
    """Whether some tensor's rank or non-batch size is unknown (what measuring a model needs)."""
    return bool(_holes(ctx))


def _holes(ctx: ModelContext) -> list[str]:
    """Tensor outputs whose rank or a non-batch size is unknown."""
    out = []
    for node in ctx.model.graph.node:
        if node.op_type in _SEQUENCE_OUTPUTS or node.domain not in ("", "ai.onnx", "com.microsoft"):
            # A sequence is not a tensor: it cannot be a graph output with a shape. onnxruntime's
            # contrib ops (com.microsoft) are tensors that ONNX shape inference cannot see.
            continue
        for o in node.output:
            s = ctx.shapes.get(o)
            # A Shape output's one axis is the input's rank, never a batch: unknown when static
            # inference lost that rank (downstream of a contrib op).
            unknown = s is None or None in (s if node.op_type == "Shape" else s[1:])
            if o and unknown and not ctx.is_constant(o):
                out.append(o)
    return out


#: Sizes the probe runs give to dynamic axes: (axis 0, other axes) per run. Other dynamic axes
#: (a sequence length) differ between the runs too, so a size that depends on them stays unknown.
PROBE_SIZES = ((1, 2), (2, 3))


def _probe_shapes(model: onnx.ModelProto, run_index: int) -> dict[str, list[int]]:
    """Input shapes of probe run ``run_index``: dims named alike get the same size."""
    first, other = PROBE_SIZES[run_index]
    shapes: dict[str, list[int]] = {}
    for name, dims, _ in input_specs(model):
        shapes[name] = [d if isinstance(d, int) and d > 0 else (first if k == 0 else other) for k, d in enumerate(dims)]
    return shapes


def _reshape_ends(ctx: ModelContext) -> list[str]:
    """Inputs and outputs of the Reshapes whose static shapes cannot pair their axes (a dynamic
    size past axis 0, or a batch merged with another axis): their concrete sizes pair them.
    A Reshape whose only unknown size is a batch axis kept as is needs no run."""

    out = []
    for node in ctx.model.graph.node:
        if node.op_type != "Reshape":
            continue
        ends = (node.input[0], node.output[0])
        si, so = ctx.shapes.get(ends[0]), ctx.shapes.get(ends[1])
        if si is not None and so is not None and None not in si[1:] + so[1:] and segments(si, so) is not None:
            continue
        out += [t for t, s in zip(ends, (si, so)) if (s is None or None in s) and not ctx.is_constant(t)]
    return out


def _counted_outputs(ctx: ModelContext) -> list[str]:
    """Outputs of the ops whose MACs are counted (:mod:`spa.model.metrics`) with a dynamic axis 0."""
    out = []
    for node in ctx.model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum") and node.output:
            s = ctx.shapes.get(node.output[0])
            if s is None or (s and s[0] is None):
                out.append(node.output[0])
    return out


def complete_with_runtime(ctx: ModelContext, probes: Sequence[dict[str, list[int]]] | None = None) -> int:
    """Fill holes in ``ctx.shapes`` from two onnxruntime runs; returns how many were filled.

    ``probes`` gives the input shapes of the two runs (:class:`spa.model.sizes.InputSizes`: typical,
    then second, every dynamic size different and valid for the model); default
    :data:`PROBE_SIZES`. With sizes too small for the model's strides (2 and 3 under four stride-2
    layers both become 1) a dynamic size looks static and would be frozen.

    Also records the concrete shapes both runs saw for the ends of Reshapes with dynamic sizes
    (``ctx.sample_shapes``), which lets the Reshape rule pair axes such as ``B·H`` with ``(B, H)``,
    and, in a model with such Reshapes, by how much a product's dynamic axis 0 exceeds the batch
    (``ctx.batch_multiples``).
    """
    holes = _holes(ctx)
    known_holes = set(holes)
    ends = [t for t in dict.fromkeys(_reshape_ends(ctx)) if t not in known_holes]
    if not holes and not ends:
        return 0
    # Where a Reshape merges the batch with other axes, a product's dynamic axis 0 may be more than
    # the batch: its sizes in the two runs (batch 1, then 2) tell by how much.
    batched = _counted_outputs(ctx) if ends else []
    size = sum(int(np.prod(t.dims, dtype=np.int64)) for t in ctx.initializers.values() if t.data_type in FLOAT_TYPES)
    if size > _MAX_PARAMS_FOR_RUN:
        log.info("%d tensor shapes unknown; model too large to run just for shapes", len(holes))
        return 0
    try:
        sess = ShapeProbe(ctx.model, list(dict.fromkeys(holes + ends + batched)))
        shapes = [_probe_shapes(ctx.model, k) for k in (0, 1)] if not probes else [probes[0], probes[-1]]
        runs = [run(sess, random_inputs(ctx.model, seed=0, shapes=s)) for s in shapes]
    except Exception as exc:  # noqa: BLE001 - a model onnxruntime cannot run keeps its holes
        log.info("could not run the model to complete %d shapes: %s", len(holes), str(exc).splitlines()[0])
        return 0
    for t in batched:
        a, b = runs[0].get(t), runs[1].get(t)
        if a is not None and b is not None and a.ndim and b.ndim == a.ndim and a.shape[0] > 1 \
                and b.shape[0] == 2 * a.shape[0]:
            ctx.batch_multiples[t] = int(a.shape[0])
    filled = 0
    for h in holes + ends:
        a, b = runs[0].get(h), runs[1].get(h)
        if a is None or b is None or a.ndim != b.ndim:
            continue
        ctx.sample_shapes[h] = (tuple(a.shape), tuple(b.shape))
        if h in holes:
            ctx.shapes[h] = tuple(int(x) if x == y else None for x, y in zip(a.shape, b.shape))
            filled += 1
    log.debug("completed %d of %d unknown shapes with onnxruntime", filled, len(holes))
    return filled


def segments(si: Shape, so: Shape) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input axes with runs of output axes whose sizes multiply to the same number.

    Unknown sizes are allowed only where both shapes have one at the same run boundary (a
    dynamic batch axis). Returns None when the shapes cannot be paired.
    """
    segs: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(si) and j < len(so):
        pi, pj = si[i], so[j]
        if pi is None or pj is None:
            if pi is None and pj is None:
                segs.append(([i], [j]))
                i, j = i + 1, j + 1
                continue
            return None
        ii, jj = [i], [j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                d = si[i] if i < len(si) else None
                if d is None:
                    return None
                pi *= d
                ii.append(i)
                i += 1
            else:
                d = so[j] if j < len(so) else None
                if d is None:
                    return None
                pj *= d
                jj.append(j)
                j += 1
        segs.append((ii, jj))
    for k in range(i, len(si)):
        if si[k] != 1 or not segs:
            return None
        segs[-1][0].append(k)
    for k in range(j, len(so)):
        if so[k] != 1 or not segs:
            return None
        segs[-1][1].append(k)
    return segs
