"""The Python API: :func:`analyze`, :func:`prune` and :func:`verify_models`.

    import spa
    model, plan, report = spa.prune("model.onnx", ratio=0.4, criterion="l1")

Nothing here writes files; the CLI does that (atomically).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import onnx

from spa.analysis.coupling import CouplingGraph, Progress, build_coupling, creates_channels
from spa.analysis.groups import Group, apply_exclusions, apply_norm_policy, find_groups
from spa.analysis.rules.attention import HEAD_MODES
from spa.check.verify import ATOL, RTOL, Verification, verify
from spa.criteria import get_criterion
from spa.errors import InvalidArgumentError, PlanError, UnsupportedModelError
from spa.model.graph import ModelContext
from spa.model.io import check_is_model, load_model
from spa.model.metrics import Cost, measure
from spa.model.shapes import complete_with_runtime, infer_shapes
from spa.model.sizes import CheckedSizes
from spa.model.sizes import derive as derive_sizes
from spa.model.sizes import resolve as resolve_sizes
from spa.passes.normalize import normalize, retie_uses, share_unsliced_uses
from spa.pipeline.targets import find_ratio, find_ratio_for_latency
from spa.planning.plan import Plan, kept_spaces, make_plan, units_from_plan
from spa.planning.selection import check_ratio, select_units, unchanged_reason
from spa.records import KeptUnits, Runtime, Scoring, Selection, Target
from spa.report.prune_report import BlockedGroup, Report, TargetOutcome
from spa.rewrite import apply_plan, check_valid

log = logging.getLogger(__name__)

ModelLike = onnx.ModelProto | str | os.PathLike[str]


@dataclass
class Analysis:
    """A model indexed and split into groups. ``model`` is SPA's private working copy."""

    source: str
    #: The model as given; None when it was loaded from ``source`` and is worked on in place
    #: (``analyze(path, in_place=True)``): reload it from there.
    original: onnx.ModelProto | None
    model: onnx.ModelProto
    ctx: ModelContext
    coupling: CouplingGraph
    groups: list[Group]
    #: The input sizes SPA runs the model at (stated with ``shapes`` or derived), checked on it.
    sizes: CheckedSizes | None = None

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


class PruneResult(NamedTuple):
    model: onnx.ModelProto
    plan: Plan
    report: Report


def _load(model: ModelLike) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        check_is_model(model)
        return model, model.graph.name or "model"
    return load_model(model), str(model)


def analyze(model: ModelLike, exclude: Sequence[str] = (), progress: Progress | None = None,
            prune_norm_axes: bool = False, *, in_place: bool = False, prune_heads: str = "whole",
            shapes: Mapping[str, Sequence[int]] | None = None, device: str = "cpu") -> Analysis:
    """Load, index, couple and group ``model`` (a path or a ModelProto, which is not changed).

    Groups that reach a normalisation over their axis (LayerNorm) are blocked unless
    ``prune_norm_axes``: pruning them is approximate. ``prune_heads`` (whole, dims, none) sets the
    granularity of attention heads (:mod:`spa.analysis.rules.attention`). With ``in_place`` and a path, the loaded
    model is the working copy (``original`` is None): no second copy of the weights is made.
    ``shapes`` (input name -> whole shape) states input sizes; the others are derived from the graph
    (:mod:`spa.model.sizes`) and the model is run at them: the shape probes use them.
    """
    loaded, source = _load(model)
    original: onnx.ModelProto | None = loaded
    if in_place and not isinstance(model, onnx.ModelProto):
        work, original = loaded, None
    else:
        work = onnx.ModelProto()
        work.CopyFrom(loaded)
    if prune_heads not in HEAD_MODES:
        raise InvalidArgumentError(f"--prune-heads must be one of {', '.join(HEAD_MODES)}, not {prune_heads!r}")
    normalize(work)  # Constant weights lifted, shared parameters untied (spa.passes.normalize)
    # Sizes are checked by running the model, unless no group can form: nothing to prune is decided
    # before anything runs (a model onnxruntime cannot run on synthetic inputs is still "nothing").
    sizes = resolve_sizes(work, shapes, device) if creates_channels(work) else CheckedSizes(derive_sizes(work, shapes), [])
    log.info("%s", sizes.sizes.summary())
    ctx, cg, groups = _couple(work, prune_heads, progress, sizes)
    if retie_uses(work, groups):  # uses of a shared parameter that coupling put in one place
        ctx, cg, groups = _couple(work, prune_heads, progress, sizes)
    apply_exclusions(groups, ctx, list(exclude))
    apply_norm_policy(groups, prune_norm_axes)
    return Analysis(source, original, work, ctx, cg, groups, sizes)


def _couple(work: onnx.ModelProto, prune_heads: str, progress: Progress | None, sizes: CheckedSizes
            ) -> tuple[ModelContext, CouplingGraph, list[Group]]:
    ctx = ModelContext.build(work, infer_shapes(work))
    ctx.head_mode = prune_heads
    if creates_channels(ctx):  # else no group can form: nothing needs to run
        complete_with_runtime(ctx, sizes.sizes.checks if sizes.ran else None)
    cg = build_coupling(ctx, progress)
    return ctx, cg, find_groups(cg, ctx)


def prune(
    model: ModelLike,
    ratio: float = 0.4,
    criterion: str = "l1",
    *,
    selection: Selection | None = None,
    target: Target | None = None,
    scoring: Scoring | None = None,
    runtime: Runtime | None = None,
    from_plan: Plan | None = None,
    verify_result: bool = False,
) -> PruneResult:
    """Prune ``model`` and return ``(pruned model, plan, report)``.

    ``ratio`` removes ``floor(ratio · n)`` units of every prunable group; ``selection``
    (:class:`~spa.records.Selection`) ranks across groups instead, rounds kept counts, excludes
    groups and sets the policy for normalised axes and attention heads. ``from_plan`` replays a
    saved plan instead of scoring (a compensated plan is compensated again, deterministically).
    ``scoring`` (:class:`~spa.records.Scoring`) gives the criterion its seed and data: ``stats``
    and ``calib`` (arrays keyed by input name) configure ``obspa``; the gradient criteria
    (``taylor``, ``snip``, ``grasp``, ``crop``) take ``calib`` plus ``labels`` and ``loss``.
    ``target`` (:class:`~spa.records.Target`, at most one set) replaces ``ratio``: MACs or
    parameters (fractions of the original, estimated exactly) or latency (ms) or speedup (a
    factor), measured in onnxruntime (see :mod:`spa.pipeline.targets`). ``runtime``
    (:class:`~spa.records.Runtime`) sets the device, the threads of latency measurements, the
    typical input shapes (unstated dynamic sizes are derived, :mod:`spa.model.sizes`) and a
    progress callback.
    The returned model has passed the full ONNX checker and onnxruntime runs at the typical sizes
    and at a second size of every dynamic axis, with the original's output shapes; MACs in the
    report are counted at the typical sizes. When no group is prunable
    (``report.groups_prunable == 0``) the model is returned as loaded, and nothing is scored,
    rewritten or run.
    """

    t0 = time.perf_counter()
    selection, target = selection or Selection(), target or Target()
    scoring, runtime = scoring or Scoring(), runtime or Runtime()
    if from_plan is not None:
        criterion = from_plan.criterion
        scoring = replace(scoring, seed=int(from_plan.options.get("seed", scoring.seed)),
                          stats=str(from_plan.options.get("stats", scoring.stats)))
        if from_plan.compensated and scoring.stats == "data" and scoring.calib is None:
            raise PlanError("this plan was compensated with calibration data: pass the same --calib to replay it")
    crit = get_criterion(criterion, seed=scoring.seed, **scoring.criterion_options()) if (
        from_plan is None or from_plan.compensated) else None
    if from_plan is None:
        check_ratio(ratio)
    if len(target.given()) > 1:
        raise InvalidArgumentError("give one target: --target-macs, --target-params, --target-latency or "
                                   "--target-speedup")
    if from_plan is not None:
        selection = replace(selection, prune_norm_axes=selection.prune_norm_axes or bool(from_plan.inexact),
                            prune_heads=str(from_plan.options.get("heads", selection.prune_heads)))
    # A model SPA loads itself is pruned in place: a second copy of its weights is never made.
    a = analyze(model, selection.exclude, runtime.progress, selection.prune_norm_axes, in_place=True,
                prune_heads=selection.prune_heads, shapes=runtime.shapes, device=runtime.device)
    assert a.sizes is not None
    typical = a.sizes.sizes.typical if a.sizes.ran else None
    before = measure(a.ctx, at=typical)  # before apply_plan mutates the working copy
    t1 = time.perf_counter()
    if not a.prunable and (from_plan is None or not from_plan.slices):
        return _nothing_to_prune(a, before, criterion, ratio, scoring.seed, t1 - t0)
    if crit is not None:
        crit.input_shapes = typical  # synthetic and random inputs at sizes valid for the model
        crit.prepare(a.prunable, a.ctx)
    outcome: TargetOutcome | None = None
    if from_plan is not None:
        kept_units = units_from_plan(from_plan, a.groups, a.ctx)
        crit_name, ratio = from_plan.criterion, from_plan.ratio
    else:
        assert crit is not None
        scores = {g.id: crit.score(g, a.ctx) for g in a.prunable}
        _check_finite_weights(scores, a)
        ratio, kept_units, outcome = _select(a, scores, ratio, selection, target, scoring, runtime, typical)
        crit_name = crit.name
    compensation = crit.compensate(a.groups, kept_units, a.ctx) if crit is not None and crit.compensates else None
    t2 = time.perf_counter()
    options: dict[str, object] = {"global": selection.global_ranking, "round_to": selection.round_to,
                                  "exclude": list(selection.exclude), "seed": scoring.seed,
                                  "prune_norm_axes": selection.prune_norm_axes, "heads": selection.prune_heads}
    if crit is not None and crit.compensates:
        options["stats"] = getattr(crit, "stats", scoring.stats)
    plan = make_plan(os.path.basename(a.source), crit_name, ratio, a.groups, kept_units, a.ctx, options,
                     compensated=compensation is not None)
    kept = kept_spaces(a.groups, kept_units)
    pruned = apply_plan(a.model, a.ctx, plan, kept, compensation) if plan.slices else a.model
    share_unsliced_uses(pruned)  # a shared parameter no slice touched stays shared
    checked = a.sizes if a.sizes.ran else None
    check_valid(pruned, a.original if a.original is not None else a.source, runtime.device, checked)
    t3 = time.perf_counter()
    after_ctx = ModelContext.build(pruned, infer_shapes(pruned))
    # Exporter patterns static inference cannot see through, and Reshapes that merge the batch
    # with other axes (the MACs of Swin's windows): as for the original (no run for the rest).
    complete_with_runtime(after_ctx, a.sizes.sizes.checks if a.sizes.ran else None)
    after = measure(after_ctx, at=typical)
    report = _report(a, plan, kept_units, before, after, crit_name, ratio, selection)
    if a.sizes.ran:
        report.sizes = {**a.sizes.sizes.to_dict(), "summary": a.sizes.sizes.summary(), "single_size": a.sizes.fixed}
    if outcome is not None and outcome.kind in ("macs", "params"):
        full = getattr(before, outcome.kind)
        outcome = replace(outcome, achieved=getattr(after, outcome.kind) / max(full, 1))
    report.target = outcome
    if compensation is not None and compensation.choices:
        report.compensation = compensation.summary()
    if verify_result:
        original = a.original if a.original is not None else load_model(a.source)
        report.verification = verify(original, pruned, plan, seed=scoring.seed, device=runtime.device,
                                     sizes=a.sizes.sizes if a.sizes.ran else None)
    t4 = time.perf_counter()
    report.seconds = {"analyze": t1 - t0, "score": t2 - t1, "rewrite": t3 - t2, "measure": t4 - t3}
    if outcome is not None and "seconds" in outcome.details:  # the latency search: timing candidates, not scoring
        report.seconds["score"] -= outcome.details["seconds"]
        report.seconds["search"] = outcome.details["seconds"]
    return PruneResult(pruned, plan, report)


def _select(a: Analysis, scores: dict[int, np.ndarray], ratio: float, selection: Selection, target: Target,
            scoring: Scoring, runtime: Runtime, typical: dict[str, list[int]] | None
            ) -> tuple[float, KeptUnits, TargetOutcome | None]:
    """The ratio and the units kept: at ``ratio``, or the ratio that meets ``target`` (with what it achieved)."""
    if target.by_cost:
        found = find_ratio(a.ctx, a.prunable, scores, target_macs=target.macs, target_params=target.params,
                           global_ranking=selection.global_ranking, round_to=selection.round_to)
        return found.ratio, found.kept_units, TargetOutcome(found.kind, found.target, found.ratio, found.achieved,
                                                            estimated=found.achieved)
    if target.by_time:
        found = find_ratio_for_latency(a.model, a.ctx, a.prunable, scores, target_ms=target.latency,
                                       target_speedup=target.speedup, global_ranking=selection.global_ranking,
                                       round_to=selection.round_to, device=runtime.device, threads=runtime.threads,
                                       seed=scoring.seed, shapes=typical)
        return found.ratio, found.kept_units, TargetOutcome(found.kind, found.target, found.ratio, found.achieved,
                                                            details=found.details)
    kept = select_units(a.groups, scores, ratio, global_ranking=selection.global_ranking, round_to=selection.round_to)
    return ratio, kept, None


def _check_finite_weights(scores: dict[int, np.ndarray], a: Analysis) -> None:
    """Raise UnsupportedModelError when a group's scores are not finite because one of its stored
    tensors holds NaN or infinity (a damaged file): no criterion can rank such channels. Scores
    that are not finite for any other reason are left to the selection's own check (a bug)."""
    for g in a.prunable:
        s = scores.get(g.id)
        if s is None or np.all(np.isfinite(s)):
            continue
        for t, _ in g.params(a.ctx):
            value = a.ctx.array(t)
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise UnsupportedModelError(f"'{t}' holds NaN or infinite values: SPA cannot rank the channels of "
                                            "non-finite weights; is the file damaged?")


def _nothing_to_prune(a: Analysis, before: Cost, criterion: str, ratio: float, seed: int,
                      analyze_s: float) -> PruneResult:
    """The result when no group is prunable, decided before anything is scored or run: the model
    comes back as loaded (shared parameters shared again), with an empty plan. Neither the
    criterion nor the checker nor onnxruntime runs: nothing was rewritten, so there is nothing
    to check (and a model onnxruntime cannot run on random inputs is still "nothing to prune")."""
    share_unsliced_uses(a.model)
    plan = make_plan(os.path.basename(a.source), criterion, ratio, a.groups, {}, a.ctx, {"seed": seed})
    report = _report(a, plan, {}, before, before, criterion, ratio, Selection())
    report.seconds = {"analyze": analyze_s, "score": 0.0, "rewrite": 0.0, "measure": 0.0}
    log.info("nothing to prune: %d groups, none prunable; nothing was scored, rewritten or run", len(a.groups))
    return PruneResult(a.model, plan, report)


def _report(a: Analysis, plan: Plan, kept_units: KeptUnits, before: Cost, after: Cost,
            criterion: str, ratio: float, selection: Selection) -> Report:
    r = Report(model=a.source, criterion=criterion, ratio=ratio, before=before, after=after)
    r.groups_total = len(a.groups)
    r.groups_prunable = len(a.prunable)
    for g in a.groups:
        if g.blocked:
            r.blocked.append(BlockedGroup(g.id, g.describe(a.ctx), g.n_units, "; ".join(g.blocked)))
        elif g.id in kept_units and len(kept_units[g.id]) < g.n_units:
            r.groups_pruned += 1
            r.units_removed += g.n_units - len(kept_units[g.id])
        else:
            r.groups_unchanged += 1
            if g.prunable:
                r.unchanged.append(BlockedGroup(g.id, g.describe(a.ctx), g.n_units, unchanged_reason(
                    g.n_units, ratio, selection.round_to, selection.global_ranking)))
    return r


def verify_models(
    original: ModelLike, pruned: ModelLike, plan: Plan | None, *, seed: int = 0,
    atol: float | None = None, rtol: float | None = None, device: str = "cpu",
    shapes: dict[str, list[int]] | None = None,
) -> Verification:
    """Masked-equivalence check of ``pruned`` against ``original`` (see :mod:`spa.check.verify`) at the
    typical input sizes and a second size of every dynamic axis; ``shapes`` states the typical
    shapes of some inputs (the rest are derived, :mod:`spa.model.sizes`)."""

    o, _ = _load(original)
    p, _ = _load(pruned)
    if (atol is not None and atol < 0) or (rtol is not None and rtol < 0):
        raise InvalidArgumentError("--atol and --rtol must be >= 0")
    sizes = resolve_sizes(o, shapes, device)
    return verify(o, p, plan, seed=seed, atol=ATOL if atol is None else atol,
                  rtol=RTOL if rtol is None else rtol, device=device, sizes=sizes.sizes if sizes.ran else None)
