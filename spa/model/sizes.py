"""Input sizes: the concrete shapes SPA runs a model at, stated by the user or derived from the graph.

Every static size of an input is kept, everywhere. Each *dynamic* axis gets two distinct sizes:
a **typical** one (MACs, latency, the first verification run) and a **second** one (the second
verification run and the second shape probe). Axes that share a ``dim_param`` get the same sizes.

* axis 0 is the batch: 1, then 2;
* a **spatial** axis (one that a Conv or pooling reads, through shape-preserving ops) must be a
  multiple ``L`` of every stride, pooling and resize factor on the way from the input
  (:func:`spatial_requirements`), and large enough for every kernel: typical is the smallest
  multiple of ``L`` that is at least :data:`MIN_SPATIAL` (and the kernels' need), second is
  typical + ``L``. Sizes such as 2 and 3 collapse to 1 after a few stride-2 layers, so a size read
  by a Reshape would look static and be frozen to 1 (PP-OCRv4 recognition);
* any other dynamic axis (a sequence): 2, then 3 (with one token, attention attends to itself
  only and would hide errors).

``--shape NAME:D1xD2...`` states an input's whole typical shape; its dynamic axes then get the
stated size and a second one (batch: 2, or 1 when 2 is stated; spatial: + ``L``; other: + 1).
What this refuses: a stated shape of the wrong rank, one that changes a static size, or one for
an input the model does not have (:class:`~spa.errors.InvalidArgumentError`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import onnx
from onnx import numpy_helper

from spa.errors import InvalidArgumentError
from spa.model.inputs import derive_domains, supplied
from spa.model.runtime import input_specs, random_inputs
from spa.model.shapes import ShapeProbe

log = logging.getLogger(__name__)

#: The smallest typical size of a spatial axis (before rounding up to the axis's multiple); the size
#: obspa's synthetic image statistics were tuned at (docs/accuracy.md).
MIN_SPATIAL = 64
#: The largest multiple a spatial axis is rounded to.
MAX_MULTIPLE = 256
#: Sizes of other dynamic axes (a sequence length): typical, second.
OTHER_SIZES = (2, 3)
BATCH_SIZES = (1, 2)

Shapes = dict[str, list[int]]


@dataclass(frozen=True)
class DynamicAxis:
    """One dynamic size, shared by every input axis with the same ``symbol``."""

    symbol: str
    #: ``(input, axis)`` pairs that carry this size.
    where: tuple[tuple[str, int], ...]
    kind: str  # "batch", "spatial" or "other"
    typical: int
    second: int
    #: A spatial axis must be a multiple of this (1 otherwise).
    multiple: int = 1
    stated: bool = False

    def label(self) -> str:
        name, axis = self.where[0]
        return f"input '{name}' axis {axis}"


@dataclass
class InputSizes:
    """The input shapes SPA uses: ``typical`` and a ``second`` set in which every dynamic axis differs."""

    typical: Shapes
    second: Shapes
    axes: list[DynamicAxis] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        return bool(self.axes)

    @property
    def checks(self) -> list[Shapes]:
        """The shapes every written model is run at: typical, then second (when any axis is dynamic)."""
        return [self.typical, self.second] if self.second != self.typical else [self.typical]

    @property
    def stated(self) -> bool:
        return any(a.stated for a in self.axes)

    def describe(self, shapes: Shapes | None = None) -> str:
        """``x:1x3x48x32 y:...``: the shapes (default the typical ones) as --shape takes them."""
        return " ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in (shapes or self.typical).items())

    def differing(self, shapes: Shapes) -> str:
        """The dynamic axes whose size in ``shapes`` differs from typical, as words."""
        parts = [f"{a.label()} = {shapes[a.where[0][0]][a.where[0][1]]}" for a in self.axes
                 if shapes[a.where[0][0]][a.where[0][1]] != a.typical]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {"typical": self.typical, "checked": self.checks,
                "dynamic": [{"axis": a.label(), "kind": a.kind, "sizes": [a.typical, a.second],
                             "multiple": a.multiple, "stated": a.stated} for a in self.axes]}

    def summary(self, pruned: bool = True) -> str:
        """One line for the report: the sizes used and where they came from (``pruned``: MACs were
        counted at them and the pruned model checked; else the model was only run at them)."""
        if not self.axes:
            return f"input sizes: {self.describe()} (static)"
        how = "stated" if all(a.stated for a in self.axes) else "stated and derived" if self.stated else "derived"
        if self.second == self.typical:
            return f"input sizes: {self.describe()} ({how}; the model runs at these sizes only)"
        also = "MACs at these sizes; also checked at" if pruned else "also run at"
        return f"input sizes: {self.describe()} ({how}; {also} {self.describe(self.second)})"


def shapes_from_pairs(pairs: Sequence[tuple[str, list[int]]]) -> Shapes | None:
    """--shape values (repeatable) as one mapping; the same input twice with different sizes is an error."""
    out: Shapes = {}
    for name, dims in pairs:
        if out.setdefault(name, list(dims)) != list(dims):
            raise InvalidArgumentError(f"--shape {name} given twice with different sizes")
    return out or None


# ---- deriving spatial multiples from the graph ------------------------------------------------

#: Ops whose output has its first input's layout (element-wise, activations, normalisations over channels).
_SAME_LAYOUT = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Relu", "LeakyRelu", "PRelu", "Elu",
    "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Clip", "Erf", "Gelu",
    "Mish", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Identity", "Cast",
    "Dropout", "BatchNormalization", "InstanceNormalization", "LRN", "Concat", "Split", "Pad", "ThresholdedRelu",
    "Not", "Equal", "Less", "Greater", "And", "Or", "Xor", "CastLike", "Shrink", "Silu", "QuickGelu",
    "QuantizeLinear", "DequantizeLinear", "QLinearAdd", "QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid",
}
_POOLS = {"Conv", "MaxPool", "AveragePool", "LpPool", "QLinearConv", "ConvInteger", "QLinearAveragePool"}


def _ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    for a in node.attribute:
        if a.name == name:
            return [int(v) for v in a.ints]
    return None


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Small stored tensors and Constant outputs (for Resize scales)."""
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if int(np.prod(t.dims)) <= 16}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


#: Per tensor: axis -> (seed ``(input, axis)``, input elements per element of this axis).
_Scales = dict[int, tuple[tuple[str, int], Fraction]]


@dataclass
class _Requirement:
    multiple: int = 1
    least: int = 1
    reaches_conv: bool = False


def spatial_requirements(model: onnx.ModelProto) -> dict[tuple[str, int], tuple[int, int]]:
    """For every input axis (past axis 1, of a rank 3-5 input) that reaches a Conv or pooling
    through layout-preserving ops: ``(multiple, least)``: the lcm of the strides, pooling and
    resize factors on the way, and the smallest size that keeps every kernel inside its input.

    Follows Conv, pooling, ConvTranspose, Resize/Upsample with constant scales, Transpose and the
    element-wise ops of ``_SAME_LAYOUT``; stops at anything else (a Reshape, a global pooling).
    """
    consts = _constants(model)
    scales: dict[str, _Scales] = {}
    req: dict[tuple[str, int], _Requirement] = {}
    for name, dims, _ in input_specs(model):
        if 3 <= len(dims) <= 5:
            scales[name] = {k: ((name, k), Fraction(1)) for k in range(2, len(dims))}
            for k in range(2, len(dims)):
                req[(name, k)] = _Requirement()
    for node in model.graph.node:
        if not any(i in scales for i in node.input):
            continue
        if node.op_type in _SAME_LAYOUT:
            out: _Scales | None = _merge([scales[i] for i in node.input if i in scales])
        elif node.input[0] in scales:
            out = _propagate(node, scales, consts, req)
        else:
            out = None
        for o in node.output:
            if o and out:
                scales[o] = out
    return {k: (r.multiple, r.least) for k, r in req.items() if r.reaches_conv}


def _merge(parts: list[_Scales]) -> _Scales:
    """Element-wise ops of several tracked tensors: per axis, the coarsest scale."""
    out: _Scales = {}
    for p in parts:
        for a, (seed, s) in p.items():
            if a not in out or s > out[a][1]:
                out[a] = (seed, s)
    return out


def _note(req: dict[tuple[str, int], _Requirement], seed: tuple[str, int], scale: Fraction, least: int = 1) -> None:
    r = req[seed]
    r.multiple = math.lcm(r.multiple, scale.numerator)
    r.least = max(r.least, math.ceil(scale * least))


def _propagate(node: onnx.NodeProto, scales: dict[str, _Scales], consts: dict[str, np.ndarray],
               req: dict[tuple[str, int], _Requirement]) -> _Scales | None:
    """The scales of ``node``'s outputs from its first input's, or None when they stop here."""
    op, x = node.op_type, scales[node.input[0]]
    if op in _POOLS:
        strides, kernel = _ints(node, "strides"), _ints(node, "kernel_shape")
        pads, dil = _ints(node, "pads"), _ints(node, "dilations")
        same = any(a.name == "auto_pad" and a.s in (b"SAME_UPPER", b"SAME_LOWER") for a in node.attribute)
        out: _Scales = {}
        for a, (seed, s) in x.items():
            k = a - 2
            req[seed].reaches_conv = True
            st = strides[k] if strides and k < len(strides) else 1
            extent = 1
            if kernel and k < len(kernel):
                extent = (dil[k] if dil and k < len(dil) else 1) * (kernel[k] - 1) + 1
            pad = pads[k] + pads[k + len(pads) // 2] if pads and k < len(pads) // 2 else 0
            _note(req, seed, s, 1 if same else max(1, extent - pad))
            out[a] = (seed, s * st)
            _note(req, seed, s * st)
        return out
    if op == "ConvTranspose":
        strides = _ints(node, "strides")
        return {a: (seed, s / (strides[a - 2] if strides and a - 2 < len(strides) else 1)) for a, (seed, s) in x.items()}
    if op in ("Resize", "Upsample"):
        k = 1 if op == "Upsample" or len(node.input) == 2 else 2
        factors = consts.get(node.input[k]) if len(node.input) > k and node.input[k] else None
        if factors is None or factors.size == 0:
            return None
        out = {}
        for a, (seed, s) in x.items():
            if a >= factors.size:  # scales for some axes only (opset 18 ``axes``): not followed
                return None
            f = Fraction(float(factors.reshape(-1)[a])).limit_denominator(64)
            if f <= 0:
                return None
            out[a] = (seed, s / f)
            _note(req, seed, s / f)
        return out
    if op == "Transpose":
        perm = _ints(node, "perm")
        if perm is None:
            return None
        return {b: x[p] for b, p in enumerate(perm) if p in x}
    return None


# ---- choosing sizes ---------------------------------------------------------------------------

def derive(model: onnx.ModelProto, stated: Mapping[str, Sequence[int]] | None = None) -> InputSizes:
    """The sizes for ``model``: ``stated`` (input -> whole typical shape) where given, derived elsewhere."""
    specs = input_specs(model)
    _check_stated(specs, stated or {})
    spatial = spatial_requirements(model) if any(_dynamic(d) for _, dims, _ in specs for d in dims[2:]) else {}
    groups: dict[str, list[tuple[str, int]]] = {}
    for name, dims, _ in specs:
        for k, d in enumerate(dims):
            if _dynamic(d):
                named = isinstance(d, str) and d not in _ANONYMOUS
                groups.setdefault(str(d) if named else f"{name}:{k}", []).append((name, k))
    axes = [_axis(symbol, where, spatial, stated or {}) for symbol, where in groups.items()]
    typical: Shapes = {}
    second: Shapes = {}
    size_of = {w: (a.typical, a.second) for a in axes for w in a.where}
    for name, dims, _ in specs:
        typical[name] = [size_of[(name, k)][0] if (name, k) in size_of else _static(d) for k, d in enumerate(dims)]
        second[name] = [size_of[(name, k)][1] if (name, k) in size_of else _static(d) for k, d in enumerate(dims)]
    return InputSizes(typical, second, axes)


#: ``dim_param`` values that name no size (paddle2onnx writes "?" for every unknown axis).
_ANONYMOUS = ("", "?", "-1", "None", "unk")


def _dynamic(d: int | str | None) -> bool:
    return not (isinstance(d, int) and d > 0)


def _static(d: int | str | None) -> int:
    """A size that is not :func:`_dynamic` (every dynamic one is an axis of its own)."""
    if not isinstance(d, int):
        raise TypeError(f"axis size {d!r} is not static")
    return d


def _check_stated(specs: list[tuple[str, list[int | str | None], int]], stated: Mapping[str, Sequence[int]]) -> None:
    names = {name: dims for name, dims, _ in specs}
    for name, sizes in stated.items():
        if name not in names:
            raise InvalidArgumentError(f"--shape names {name!r}, which is not an input of the model "
                                       f"(inputs: {', '.join(names)})")
        dims = names[name]
        if len(sizes) != len(dims):
            raise InvalidArgumentError(f"--shape {name} has {len(sizes)} sizes; the input has rank {len(dims)}")
        for k, (d, s) in enumerate(zip(dims, sizes)):
            if isinstance(d, int) and not _dynamic(d) and d != s:
                raise InvalidArgumentError(f"--shape {name}: axis {k} is static ({d}) in the model, not {s}")


def _axis(symbol: str, where: list[tuple[str, int]], spatial: dict[tuple[str, int], tuple[int, int]],
          stated: Mapping[str, Sequence[int]]) -> DynamicAxis:
    given = [int(stated[n][k]) for n, k in where if n in stated]
    if len(set(given)) > 1:
        raise InvalidArgumentError(f"--shape gives the dynamic size '{symbol}' different values: {sorted(set(given))}")
    if any(k == 0 for _, k in where):
        kind, multiple, least = "batch", 1, 1
    elif any(w in spatial for w in where):
        kind = "spatial"
        multiple = math.lcm(*(spatial[w][0] for w in where if w in spatial))
        if multiple > MAX_MULTIPLE:  # odd strides multiply up; sizes that large would make every run slow
            log.info("input %s: the strides on its way multiply to %d; using multiples of %d", where[0], multiple,
                     MAX_MULTIPLE)
            multiple = MAX_MULTIPLE
        least = max(spatial[w][1] for w in where if w in spatial)
    else:
        kind, multiple, least = "other", 1, 1
    if given:
        t = given[0]
        second = {"batch": 2 if t != 2 else 1, "spatial": t + multiple, "other": t + 1}[kind]
        if kind == "spatial" and t % multiple:
            log.info("--shape: %s = %d is not a multiple of %d (the strides, pooling and resizing on its way)",
                        DynamicAxis(symbol, tuple(where), kind, t, second).label(), t, multiple)
        return DynamicAxis(symbol, tuple(where), kind, t, second, multiple, stated=True)
    if kind == "batch":
        return DynamicAxis(symbol, tuple(where), kind, *BATCH_SIZES)
    if kind == "other":
        return DynamicAxis(symbol, tuple(where), kind, *OTHER_SIZES)
    t = multiple * max(1, math.ceil(max(MIN_SPATIAL, least) / multiple))
    return DynamicAxis(symbol, tuple(where), kind, t, t + multiple, multiple)


def with_batch(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None, batch: int) -> Shapes | None:
    """``shapes`` with ``batch`` on every dynamic axis 0 (a static batch is kept); None stays None."""
    if shapes is None:
        return None
    out: Shapes = {}
    for name, dims, _ in input_specs(model):
        if name in shapes:
            out[name] = [batch if k == 0 and _dynamic(d) else int(s) for k, (d, s) in enumerate(zip(dims, shapes[name]))]
    return out


# ---- checking sizes against the model itself --------------------------------------------------

#: Ops whose output sizes depend on the values they read (then on weights, which the runs here zero).
_VALUE_DEPENDENT = {"NonZero", "NonMaxSuppression", "Unique", "Compress", "TopK", "Loop", "If", "Scan"}

#: Further sizes tried for a dynamic axis whose second size the model refuses, in multiples of
#: the axis's step (its multiple, or 1) past the typical size.
_ALTERNATIVES = (2, 3)


@dataclass
class CheckedSizes:
    """:class:`InputSizes` the original model runs at, with the output shapes it gives there."""

    sizes: InputSizes
    #: Per entry of ``sizes.checks``: output name -> shape the original gives; empty when the
    #: model did not run at the derived sizes (then SPA's callers fall back to placeholder sizes).
    outputs: list[dict[str, tuple[int, ...]]]
    #: Dynamic axes the model accepts at one size only (checked at that size alone).
    fixed: list[str] = field(default_factory=list)
    #: The model has ops whose output sizes depend on values (NonZero, NonMaxSuppression, ...): the
    #: shapes above come from zero weights, so only output ranks can be compared.
    value_dependent: bool = False

    @property
    def ran(self) -> bool:
        """Whether the model ran at these sizes (only then are they used)."""
        return bool(self.outputs)


def resolve(model: onnx.ModelProto, stated: Mapping[str, Sequence[int]] | None = None,
            device: str = "cpu") -> CheckedSizes:
    """Derive sizes (:func:`derive`) and run the model at them (weights fed as zeros, see
    :class:`~spa.model.shapes.ShapeProbe`). A derived typical size the model refuses is replaced by a
    smaller multiple it accepts (one axis at a time); a second size it refuses by another one; an
    axis that accepts one size only is checked at it alone, with a warning.

    Refuses (InvalidArgumentError) stated sizes the model does not run at. When it runs at none
    of the derived sizes, warns and returns sizes without outputs (``ran`` is False): SPA then
    falls back to its placeholder sizes.
    """
    sizes = derive(model, stated)
    try:
        probe = ShapeProbe(model, [], device)
    except Exception as exc:  # noqa: BLE001 - onnxruntime refuses some valid models (ops it lacks)
        log.warning("onnxruntime cannot load the model (%s); input sizes are not checked on it", _first_line(exc))
        return CheckedSizes(sizes, [])
    names = [o.name for o in probe.get_outputs()]

    def outputs(shapes: Shapes) -> dict[str, tuple[int, ...]] | str:
        try:
            got = probe.run(names, random_inputs(model, seed=0, shapes=shapes))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
            return _first_line(exc)
        return {n: tuple(int(d) for d in np.shape(v)) for n, v in zip(names, got)}

    first = outputs(sizes.typical)
    if isinstance(first, str) and not all(a.stated for a in sizes.axes):
        found = _search_typical(sizes, outputs)
        if found is not None:
            log.info("the model does not run at %s (%s); using %s", sizes.describe(), first, found.describe())
            sizes, first = found, outputs(found.typical)
    if isinstance(first, str):
        if sizes.stated:
            raise InvalidArgumentError(f"the model does not run at {sizes.describe()} (the sizes given with --shape): "
                                       f"{first}; give sizes it accepts")
        # Inputs whose valid values SPA cannot derive (spa.model.inputs) are the likelier cause: the
        # pruned model's check then asks for real ones (--inputs), once.
        blame_values = supplied() is None and bool(derive_domains(model).underived())
        log.log(logging.INFO if blame_values else logging.WARNING,
                "the model does not run at the sizes SPA derived from its graph (%s: %s); give its input "
                "sizes with --shape NAME:D1xD2x... to check the pruned model at them", sizes.describe(), first)
        return CheckedSizes(sizes, [])
    dependent = any(n.op_type in _VALUE_DEPENDENT for n in model.graph.node)
    if not sizes.dynamic:
        return CheckedSizes(sizes, [first], value_dependent=dependent)
    second = outputs(sizes.second)
    fixed: list[str] = []
    if isinstance(second, str):
        sizes, fixed = _repair(sizes, outputs)
        second = outputs(sizes.second)
        if isinstance(second, str):  # each axis alone is fine, all together are not
            raise InvalidArgumentError(f"the model does not run at {sizes.describe(sizes.second)}: {second}; "
                                       "give its input sizes with --shape NAME:D1xD2x...")
    return CheckedSizes(sizes, [first, second] if sizes.second != sizes.typical else [first], fixed, dependent)


def _step(a: DynamicAxis) -> int:
    return a.multiple if a.kind == "spatial" else 1


def _candidates(a: DynamicAxis) -> list[int]:
    """Other typical sizes to try for an axis the model refuses at its typical size: the smallest
    multiples of a spatial axis (PP-OCRv4 recognition runs at a height of 48 only), small sequences."""
    if a.stated or a.kind == "batch":
        return []
    values = [a.multiple * k for k in (1, 2, 3, 4)] if a.kind == "spatial" else [1, 4, 8, 16]
    return [v for v in dict.fromkeys(values) if v != a.typical]


def _retyped(sizes: InputSizes, axis: DynamicAxis, value: int) -> InputSizes:
    """``sizes`` with the typical size of ``axis`` set to ``value`` (its second one past it)."""
    axes = [DynamicAxis(a.symbol, a.where, a.kind, value, value + _step(a), a.multiple, a.stated) if a is axis else a
            for a in sizes.axes]
    typical = _with(sizes, axis, value)
    second = {k: list(v) for k, v in sizes.second.items()}
    for name, k in axis.where:
        second[name][k] = value + _step(axis)
    return InputSizes(typical, second, axes)


def _search_typical(sizes: InputSizes, run: Callable[[Shapes], object]) -> InputSizes | None:
    """Typical sizes the model runs at, changing one unstated axis at a time; None if none is found."""
    for a in sizes.axes:
        for v in _candidates(a):
            if not isinstance(run(_with(sizes, a, v)), str):
                return _retyped(sizes, a, v)
    return None


def _with(sizes: InputSizes, axis: DynamicAxis, value: int) -> Shapes:
    """The typical shapes with ``axis`` set to ``value``."""
    out = {k: list(v) for k, v in sizes.typical.items()}
    for name, k in axis.where:
        out[name][k] = value
    return out


def _repair(sizes: InputSizes, run: Callable[[Shapes], object]) -> tuple[InputSizes, list[str]]:
    """Axis by axis, a second size the model accepts (``run`` returns a string when it fails), or
    the typical one, with a warning."""
    axes: list[DynamicAxis] = []
    fixed: list[str] = []
    for a in sizes.axes:
        step = _step(a)
        tried = [a.second] + [a.typical + n * step for n in _ALTERNATIVES]
        ok = next((v for v in dict.fromkeys(tried) if v != a.typical and not isinstance(run(_with(sizes, a, v)), str)),
                  None)
        if ok is None:
            log.log(logging.INFO if a.stated else logging.WARNING,  # a stated size is the one that matters
                    "%s: the model runs at %d but not at %s; it is checked at %d only", a.label(), a.typical,
                    ", ".join(map(str, dict.fromkeys(tried))), a.typical)
            fixed.append(a.label())
            ok = a.typical
        axes.append(DynamicAxis(a.symbol, a.where, a.kind, a.typical, ok, a.multiple, a.stated))
    second = {k: list(v) for k, v in sizes.typical.items()}
    for a in axes:
        for name, k in a.where:
            second[name][k] = a.second
    return InputSizes(sizes.typical, second, axes), fixed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
