"""Apply a plan to a model: run the graph-surgery passes, then prove the result is valid.

The result must pass ``onnx.checker.check_model(full_check=True)`` and run in onnxruntime;
otherwise :class:`~spa.errors.RewriteError` is raised and nothing is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import numpy as np
import onnx

from spa.analysis.rules.base import KeptMap
from spa.criteria.compensation import Compensation
from spa.errors import OriginalRunError, RewriteError, SpaError
from spa.model.graph import ModelContext
from spa.model.inputs import derive_domains, is_runtime_error, supplied, synthesis_error
from spa.model.io import serialized_size, weightless
from spa.model.runtime import make_session, random_inputs, run
from spa.model.shapes import ShapeProbe
from spa.model.sizes import CheckedSizes, InputSizes
from spa.passes import (
    CleanupPass,
    CompensateWeightsPass,
    DropValueInfoPass,
    MaterializeViewsPass,
    PassManager,
    RewriteShapeConstantsPass,
    SliceInitializersPass,
    UpdateAttributesPass,
)
from spa.passes.materialize_views import views_to_materialize
from spa.planning.plan import Plan

log = logging.getLogger(__name__)

#: Sliced tensors up to this many elements keep their original value in the context's cache.
SNAPSHOT_ELEMENTS = 1 << 18


def apply_plan(model: onnx.ModelProto, ctx: ModelContext, plan: Plan, kept: KeptMap,
               compensation: Compensation | None = None) -> onnx.ModelProto:
    """Rewrite ``model`` (the object ``ctx`` indexes) in place and return it.

    ``compensation`` (from a compensating criterion) is written before slicing.
    """
    for s in plan.slices:
        # Snapshot small originals (shape arithmetic may read them) before the slice pass replaces
        # them; large weights are not read back, and decoding them only to cache them costs memory.
        shape = ctx.shape(s.initializer)
        if shape is not None and int(np.prod([d or 1 for d in shape], dtype=np.int64)) <= SNAPSHOT_ELEMENTS:
            ctx.array(s.initializer)
    resized = _downstream(ctx, {t for t, _ in kept})  # weights too: some exporters keep their value_info
    comp_passes = []
    if compensation is not None:
        values = {**compensation.weights, **compensation.biases}
        comp_passes.append(CompensateWeightsPass(values, compensation.new_biases, kept))
    manager = PassManager([
        *comp_passes,
        MaterializeViewsPass(views_to_materialize(ctx.views, (s.initializer for s in plan.slices))),
        SliceInitializersPass(plan.slices),
        UpdateAttributesPass(ctx, kept),
        RewriteShapeConstantsPass(ctx, kept),
        DropValueInfoPass(resized),
        CleanupPass(),
    ])
    return manager(model).model


def _downstream(ctx: ModelContext, tensors: set[str]) -> set[str]:
    """``tensors`` and everything computed from them: any of these may have a new shape (e.g.
    the 5-D middle of a channel shuffle), so their value_info is stale."""
    out, frontier = set(tensors), list(tensors)
    while frontier:
        for node in ctx.consumers.get(frontier.pop(), ()):
            for o in node.output:
                if o and o not in out:
                    out.add(o)
                    frontier.append(o)
    return out


#: Models whose serialized size is over this are checked without copying their weights (see
#: :func:`check_valid`); a protobuf message cannot exceed 2 GiB anyway.
LARGE_MODEL_BYTES = 256 << 20


def check_valid(pruned: onnx.ModelProto, original: onnx.ModelProto | str | None, device: str = "cpu",
                sizes: CheckedSizes | None = None) -> None:
    """Raise RewriteError unless ``pruned`` passes the full checker and runs in onnxruntime at
    every size of ``sizes`` (:func:`spa.model.sizes.resolve`: the typical sizes and a second set in which
    every dynamic axis differs), giving there the output shapes the original gives. Without
    ``sizes``, one run at :func:`~spa.model.runtime.random_inputs`' default sizes.

    ``original`` (a model, a path, or None when it is no longer at hand) is consulted when the
    pruned model fails: if the original fails the full checker too, only the structure is checked;
    if it does not run on the same inputs either, that is :class:`OriginalRunError`, not a bug in
    SPA. Serializing a model for the checker and onnxruntime copies its weights two or three times;
    models over :data:`LARGE_MODEL_BYTES` are checked without those copies instead: their large
    float weights are typed inputs, fed zeros (:class:`~spa.model.shapes.ShapeProbe`). What that leaves
    out, the per-tensor checks of those weights' data, holds by construction (they are the input's
    tensors, or numpy slices of them) and is checked again when :func:`spa.model.io.save_model` writes them.
    """

    run_original = _original_run(original, pruned, device)
    large = serialized_size(pruned) > LARGE_MODEL_BYTES
    data = weightless(pruned) if large else pruned.SerializeToString()  # once, for the checker and onnxruntime
    _check_structure(data, pruned, original, run_original)
    sessions: list[object] = []

    def session() -> object:  # made inside the checked runs: a model onnxruntime cannot load fails there
        if not sessions:
            sessions.append(ShapeProbe(pruned, [], device) if large else make_session(data, device))
        return sessions[0]

    def run_at(shapes: dict[str, list[int]] | None) -> dict[str, np.ndarray]:
        return run(session(), random_inputs(pruned, seed=0, shapes=shapes))

    if sizes is None:
        _check_runs(lambda: run(session(), random_inputs(pruned, seed=0)), pruned, "",
                    None if run_original is None else lambda: run_original(None))
        return
    for shapes, expected in zip(sizes.sizes.checks, sizes.outputs):
        where = _where(sizes.sizes, shapes)
        got = _check_runs(partial(run_at, shapes), pruned, where, None if run_original is None else partial(run_original, shapes))
        for name, shape in expected.items():
            if name in got and (len(got[name].shape) != len(shape) if sizes.value_dependent
                                else tuple(got[name].shape) != shape):
                raise RewriteError(f"the pruned model gives output '{name}' of shape {list(got[name].shape)} "
                                   f"{where}, where the original gives {list(shape)}; {_BUG}")


def _where(sizes: InputSizes, shapes: dict[str, list[int]]) -> str:
    """``at input 'x' axis 3 = 40 (x:2x3x48x40)``: the run's sizes, naming the axes that differ from typical."""
    axes = sizes.differing(shapes)
    return f"at {axes} ({sizes.describe(shapes)})" if axes else f"at the typical sizes {sizes.describe(shapes)}"


_BUG = "nothing was written. This is a bug in SPA: please report it; --exclude can skip the offending layer"


def _check_structure(checked: onnx.ModelProto | bytes, pruned: onnx.ModelProto,
                     original: onnx.ModelProto | str | None,
                     run_original: Callable[[dict[str, list[int]] | None], object] | None = None) -> None:
    """The full checker on ``checked`` (the pruned model, serialized or weightless). When the
    input model itself fails the full check, only the structure of ``checked`` is checked. When
    it passes but does not run in onnxruntime (``run_original`` raises: the checker cannot see a
    computed shape that onnxruntime refuses), that is reported instead of a bug in SPA."""
    try:
        onnx.checker.check_model(checked, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        if original is None or _passes_full_check(original):
            if run_original is not None:
                _raise_if_original_fails(lambda: run_original(None))
            raise RewriteError(f"the pruned model fails onnx.checker ({_first_line(exc)}); {_BUG}") from None
        log.warning("the input model itself fails the full onnx check; checked structure only")
        onnx.checker.check_model(pruned if isinstance(checked, bytes) else checked, full_check=False)


def _check_runs(run_once: Callable[[], dict[str, np.ndarray]], pruned: onnx.ModelProto, where: str,
                run_original: Callable[[], object] | None = None) -> dict[str, np.ndarray]:
    """``run_once`` (an onnxruntime run of the pruned model) must not raise; ``where`` names its
    sizes. When it fails on synthetic values SPA could not derive (:mod:`spa.model.inputs`), the inputs
    are to blame, not the rewrite: the error asks for real ones. When ``run_original`` (the same
    run of the input model) fails too, the input model cannot run on these inputs:
    :class:`OriginalRunError`, not a bug in SPA."""
    try:
        return run_once()
    except SpaError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many unrelated types
        if supplied() is None and is_runtime_error(exc) and derive_domains(pruned).underived():
            raise synthesis_error(pruned, exc) from None
        if run_original is not None:
            _raise_if_original_fails(run_original)
        at = f" {where}, where the original runs" if where else ""
        raise RewriteError(f"the pruned model does not run in onnxruntime{at} ({_first_line(exc)}); {_BUG}") from None


def _raise_if_original_fails(run_original: Callable[[], object]) -> None:
    """Raise :class:`OriginalRunError` when ``run_original`` (an onnxruntime run of the input
    model on SPA's synthetic inputs) fails."""
    try:
        run_original()
    except SpaError:
        raise
    except _LoadFailure as exc:
        raise OriginalRunError(
            f"the input model itself does not load in onnxruntime ({_first_line(exc.cause)}); this is not a bug "
            "in SPA: the model is invalid or needs a newer onnxruntime; nothing was written") from None
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many unrelated types
        raise OriginalRunError(
            f"the input model itself does not run in onnxruntime on {_inputs_named()} ({_first_line(exc)}); "
            "this is not a bug in SPA: pass representative inputs with --inputs DATA.npz; nothing was written"
        ) from None


def _inputs_named() -> str:
    """What the onnxruntime runs of the checks were fed, for messages."""
    return "SPA's synthetic inputs" if supplied() is None else "the --inputs data"


class _LoadFailure(Exception):
    """onnxruntime could not create a session of the input model (``cause``)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _original_run(original: onnx.ModelProto | str | None, pruned: onnx.ModelProto,
                  device: str) -> Callable[[dict[str, list[int]] | None], object] | None:
    """The onnxruntime run :func:`check_valid` makes of the pruned model at the given input sizes,
    made of ``original`` (same inputs: pruning keeps the interface); None without an original."""
    if original is None:
        return None

    def run_original(shapes: dict[str, list[int]] | None) -> object:
        feeds = random_inputs(pruned, seed=0, shapes=shapes)
        try:
            if isinstance(original, onnx.ModelProto) and serialized_size(original) > LARGE_MODEL_BYTES:
                session: object = ShapeProbe(original, [], device)
            else:
                session = make_session(original, device)
        except SpaError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many unrelated types
            raise _LoadFailure(exc) from None
        return run(session, feeds)

    return run_original


def _passes_full_check(model: onnx.ModelProto | str) -> bool:
    """Whether ``model`` (a ModelProto or a path) passes the full checker; a model too large to
    serialize is judged by its weightless copy (the checks that need weights are per tensor)."""

    try:
        if isinstance(model, onnx.ModelProto) and serialized_size(model) > LARGE_MODEL_BYTES:
            model = weightless(model)
        onnx.checker.check_model(model, full_check=True)
    except Exception:  # noqa: BLE001
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
