"""Apply a plan to a model: run the graph-surgery passes, then prove the result is valid.

The result must pass ``onnx.checker.check_model(full_check=True)`` and run in onnxruntime;
otherwise :class:`~spa.errors.RewriteError` is raised and nothing is written.
"""

from __future__ import annotations

import logging

import onnx

from spa.errors import RewriteError, SpaError
from spa.graph import ModelContext, Space
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
from spa.plan import Plan

log = logging.getLogger(__name__)


def apply_plan(model: onnx.ModelProto, ctx: ModelContext, plan: Plan, kept: dict[Space, object],
               compensation: object | None = None) -> onnx.ModelProto:
    """Rewrite ``model`` (the object ``ctx`` indexes) in place and return it.

    ``compensation`` (from a compensating criterion) is written before slicing.
    """
    for s in plan.slices:
        ctx.array(s.initializer)  # snapshot originals before the slice pass replaces them
    resized = _downstream(ctx, {t for t, _ in kept})  # weights too: some exporters keep their value_info
    comp_passes = []
    if compensation is not None:
        values = {**compensation.weights, **compensation.biases}  # type: ignore[attr-defined]
        comp_passes.append(CompensateWeightsPass(values, compensation.new_biases, kept))  # type: ignore[attr-defined,arg-type]
    manager = PassManager([
        *comp_passes,
        MaterializeViewsPass(views_to_materialize(ctx.views, (s.initializer for s in plan.slices))),
        SliceInitializersPass(plan.slices),
        UpdateAttributesPass(ctx, kept),  # type: ignore[arg-type]
        RewriteShapeConstantsPass(ctx, kept),  # type: ignore[arg-type]
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


def check_valid(pruned: onnx.ModelProto, original: onnx.ModelProto, device: str = "cpu") -> None:
    """Raise RewriteError unless ``pruned`` passes the full checker and runs in onnxruntime."""
    data = pruned.SerializeToString()  # once, for both the checker and onnxruntime
    try:
        onnx.checker.check_model(data, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        if _passes_full_check(original):
            raise RewriteError(
                f"the pruned model fails onnx.checker ({_first_line(exc)}); nothing was written. "
                "This is a bug in SPA: please report it; --exclude can skip the offending layer"
            ) from None
        log.warning("the input model itself fails the full onnx check; checked structure only")
        onnx.checker.check_model(pruned, full_check=False)
    from spa.runtime import make_session, random_inputs, run

    try:
        run(make_session(data, device), random_inputs(pruned, seed=0))
    except SpaError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many unrelated types
        raise RewriteError(
            f"the pruned model does not run in onnxruntime ({_first_line(exc)}); nothing was written. "
            "This is a bug in SPA: please report it; --exclude can skip the offending layer"
        ) from None


def _passes_full_check(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception:  # noqa: BLE001
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
