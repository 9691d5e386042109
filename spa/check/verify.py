"""Masked equivalence: the pruned model must compute what the original computes with the
removed channels zeroed.

The masked original zeroes, in every tensor the plan slices, the indices the plan removes. Both
models run in onnxruntime on the same seeded random inputs and every output is compared with
``|pruned - masked| <= atol + rtol · max|masked|``. Both models run at every size of
:class:`spa.model.sizes.InputSizes` (``spa prune --verify``, ``spa verify``): the typical sizes and a
second size of every dynamic axis (a batch of 2; spatial sizes the strides divide; sequences of 2
and 3 tokens: with one token, attention attends to itself only and a rotary embedding is the
identity, which would hide errors). ``shapes`` sets whole input shapes of a single run. Where equivalence cannot hold by nature
(weights were compensated, or a normalisation spans a pruned axis) the difference is reported as
*drift* against the unmodified original instead of failing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import onnx
from onnx import numpy_helper

from spa.errors import InvalidArgumentError, ModelMismatchError, PlanError
from spa.model.inputs import supplied
from spa.model.quant import qop_of
from spa.model.runtime import input_specs, make_session, random_inputs, run
from spa.model.shapes import PROBE_SIZES
from spa.model.sizes import InputSizes
from spa.passes import MaterializeViewsPass, PassError
from spa.passes.fold_weight_computations import FoldWeightComputationsPass
from spa.passes.lift_constants import LiftConstantsPass
from spa.passes.materialize_views import identity_views, views_to_materialize
from spa.passes.normalize import untie_for_plan
from spa.passes.slice_initializers import stored_tensors
from spa.planning.plan import Plan

log = logging.getLogger(__name__)

ATOL = 1e-5
RTOL = 1e-4


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    scale: float
    #: within the tolerance; None where nothing is judged (drift of a compensated or inexact plan)
    ok: bool | None

    @property
    def rel(self) -> float:
        return self.max_abs / self.scale if self.scale else self.max_abs


@dataclass
class Verification:
    mode: str  # "masked-equivalence", "masked-approx" (QOperator models), "drift" or "direct"
    passed: bool
    outputs: list[OutputDiff] = field(default_factory=list)
    note: str = ""
    #: The input shapes both models ran with (the first run's).
    shapes: dict[str, list[int]] = field(default_factory=dict)
    #: The input shapes of every run (typical, then a second size of every dynamic axis).
    runs: list[dict[str, list[int]]] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        """Whether the outputs were held to a tolerance. Drift (a compensated or inexact plan) and
        the QOperator approximation are reported, not judged: such a verification fails only when
        the pruned model does not run (``--max-drift`` judges drift)."""
        return self.mode in ("masked-equivalence", "direct")

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for o, od in zip(d["outputs"], self.outputs):
            o["rel"] = od.rel
        d["judged"] = self.judged
        return d

    def summary(self) -> str:
        worst = max(self.outputs, key=lambda o: o.rel, default=None)
        tail = f"; worst output '{worst.name}': max abs {worst.max_abs:.3g}, rel {worst.rel:.3g}" if worst else ""
        verdict = ("PASSED" if self.judged else "REPORTED") if self.passed else "FAILED"
        at = f" at {len(self.runs)} input sizes" if len(self.runs) > 1 else ""
        return f"verification ({self.mode}) {verdict}{at}{tail}{'; ' + self.note if self.note else ''}"


def mask_model(model: onnx.ModelProto, plan: Plan) -> onnx.ModelProto:
    """A copy of ``model`` with every index the plan removes set to zero."""
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    # As spa.passes.normalize did, in its order: float Constant weights lifted first, so that a weight
    # computed from them (a Where of a Constant weight) is folded and can be named by the plan.
    LiftConstantsPass()(masked)
    FoldWeightComputationsPass()(masked)  # the plan may slice a computed weight
    untie_for_plan(masked, (s.initializer for s in plan.slices))  # per-use tensors of a shared parameter
    names = views_to_materialize(identity_views(masked), (s.initializer for s in plan.slices))
    try:
        MaterializeViewsPass(names)(masked)
    except PassError as exc:
        raise PlanError(f"plan names a tensor the original model does not store: {exc}") from None
    tensors = stored_tensors(masked)
    by_tensor: dict[str, list] = {}
    for s in plan.slices:
        if s.initializer not in tensors:
            raise PlanError(f"plan names '{s.initializer}', which is not a stored tensor of the original model")
        by_tensor.setdefault(s.initializer, []).append(s)
    for name, entries in by_tensor.items():
        proto = tensors[name]
        arr = numpy_helper.to_array(proto).copy()  # one copy per tensor, however many axes
        for s in entries:
            if s.axis >= arr.ndim or arr.shape[s.axis] != s.size:
                raise PlanError(f"plan says '{name}' axis {s.axis} has size {s.size}; the model disagrees")
            drop = np.ones(s.size, bool)
            drop[np.asarray(s.keep, dtype=np.int64)] = False
            idx: list[slice | np.ndarray] = [slice(None)] * arr.ndim
            idx[s.axis] = drop
            arr[tuple(idx)] = 0
        proto.CopyFrom(numpy_helper.from_array(arr, name))
    return masked


def _check_same_interface(original: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    """Pruning never changes inputs or outputs; models that differ there are not a pair."""
    def outputs(m: onnx.ModelProto) -> list[tuple[str, int]]:
        return [(o.name, o.type.tensor_type.elem_type) for o in m.graph.output]

    for kind, a, b in (("inputs", input_specs(original), input_specs(pruned)),
                       ("outputs", outputs(original), outputs(pruned))):
        if a != b:
            raise ModelMismatchError(f"the two models have different {kind}: {a} vs {b}; "
                                     "was the second pruned from the first?")


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], atol: float, rtol: float) -> list[OutputDiff]:
    diffs = []
    for name, r in ref.items():
        g = got.get(name)
        if g is None or g.shape != r.shape:
            shape = None if g is None else g.shape
            diffs.append(OutputDiff(name, float("inf"), 0.0, False))
            log.error("output '%s': expected shape %s, got %s", name, r.shape, shape)
            continue
        rf, gf = r.astype(np.float64), g.astype(np.float64)
        scale = float(np.max(np.abs(rf))) if rf.size else 0.0
        err = float(np.max(np.abs(rf - gf))) if rf.size else 0.0
        if np.isnan(err):
            err = float("inf")
        diffs.append(OutputDiff(name, err, scale, err <= atol + rtol * scale))
    return diffs


def input_shapes(model: onnx.ModelProto, batch: int | None = None,
                 shapes: dict[str, list[int]] | None = None) -> dict[str, list[int]]:
    """The shape of every input for verification: ``shapes`` where given, else static sizes kept
    and dynamic ones set to the probe's sizes (``batch`` on axis 0). A named dim (``seq``) gets
    one size wherever it occurs: the size ``shapes`` gives it, else the one where it first occurs."""

    first, other = PROBE_SIZES[-1]
    first = first if batch is None else batch
    named: dict[str, int] = {}
    out: dict[str, list[int]] = {}
    specs = input_specs(model)
    unknown = sorted(set(shapes or {}) - {name for name, _, _ in specs})
    if unknown:
        raise InvalidArgumentError(f"--shape names {unknown[0]!r}, which is not an input of the model "
                                   f"(inputs: {', '.join(name for name, _, _ in specs)})")
    for name, dims, _ in specs:
        if shapes and name in shapes:
            if len(shapes[name]) != len(dims):
                raise InvalidArgumentError(f"--shape {name} has {len(shapes[name])} sizes; the input has rank {len(dims)}")
            out[name] = list(shapes[name])
            for d, size in zip(dims, out[name]):
                if isinstance(d, str):
                    named.setdefault(d, size)  # a size given for "seq" holds for the other inputs too
    for name, dims, _ in specs:
        if name in out:
            continue
        shape = []
        for k, d in enumerate(dims):
            size = first if k == 0 else other
            if isinstance(d, int) and d > 0:
                size = d
            elif isinstance(d, str):
                size = named.setdefault(d, size)
            shape.append(size)
        out[name] = shape
    return out


def verify(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    plan: Plan | None,
    *,
    seed: int = 0,
    atol: float = ATOL,
    rtol: float = RTOL,
    device: str = "cpu",
    batch: int | None = None,
    shapes: dict[str, list[int]] | None = None,
    sizes: InputSizes | None = None,
) -> Verification:
    """Run the check described in the module docstring at every size of ``sizes`` (the typical
    sizes and a second one of every dynamic axis, :mod:`spa.model.sizes`); without it, once at
    :func:`input_shapes` (``batch`` overrides the probe's batch). Each output's worst difference
    over the runs is reported; a run the pruned model fails fails the verification."""
    _check_same_interface(original, pruned)
    runs = sizes.checks if sizes is not None else [input_shapes(original, batch, shapes)]
    given = supplied()  # real inputs (--inputs) are checked at their own sizes unless others are asked for
    if given is not None and shapes is None and batch is None and given.covers([s[0] for s in input_specs(original)]):
        runs = [{name: list(a.shape) for name, a in given.arrays.items()}, *runs[1:]]
    if plan is None:
        mode, reference, note = "direct", original, "no plan given: compared to the original as is"
    elif plan.compensated or plan.inexact:
        why = "weights were compensated" if plan.compensated else "; ".join(plan.inexact)
        mode, reference, note = "drift", original, (f"masked equivalence does not hold by nature ({why}); drift "
                                                     "reported, not judged (spa prune --max-drift E judges it)")
    else:
        mode, reference, note = "masked-equivalence", mask_model(original, plan), ""
    # QDQ models: onnxruntime's full optimisations fuse Dequantize-op-Quantize into integer kernels
    # whose requantisation rounds differently for other channel counts (one quantum apart); the
    # basic level runs the graph's own arithmetic, where zeroed channels add exact zeros.
    basic = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in original.graph.node)
    ref_session = make_session(reference, device, basic=basic and mode == "masked-equivalence")
    got_session = make_session(pruned, device, basic=basic)
    worst: dict[str, OutputDiff] = {}
    for k, run_shapes in enumerate(runs):
        feeds = random_inputs(original, seed=seed + k, shapes=run_shapes)
        ref = run(ref_session, feeds)
        try:
            got = run(got_session, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            where = sizes.differing(run_shapes) if sizes is not None else ""
            at = f"{where} ({_describe(run_shapes)})" if where else _describe(run_shapes)
            return Verification(mode, False, list(worst.values()), f"the pruned model does not run at {at}: {text}",
                                run_shapes, runs)
        for d in compare(ref, got, atol, rtol):
            if d.name not in worst or not d.ok or (worst[d.name].ok and d.rel > worst[d.name].rel):
                worst[d.name] = d
    diffs = list(worst.values())
    if mode == "drift":  # reported, not judged: no output is "ok" or not
        return Verification(mode, True, [replace(d, ok=None) for d in diffs], note, runs[0], runs)
    passed = all(d.ok for d in diffs)
    if not passed and mode == "masked-equivalence" and any(qop_of(n) is not None for n in original.graph.node):
        # uint8 activations x int8 weights saturate in pairs of products on x86 (without reduce_range),
        # so such a kernel gives other sums once channels are gone; int8 x int8 and reduce_range are exact.
        note = ("QOperator model with uint8 x int8 kernels, which saturate on x86 and so differ once channels are "
                "removed: the difference to the masked model is reported, not judged")
        return Verification("masked-approx", True, [replace(d, ok=None) for d in diffs], note, runs[0], runs)
    return Verification(mode, passed, diffs, note, runs[0], runs)


def _describe(shapes: dict[str, list[int]]) -> str:
    return " ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items())
