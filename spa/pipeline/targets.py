"""Pruning to a budget: find the ratio that meets a MACs, parameter, latency or speedup target.

The cost of a candidate selection is estimated without rewriting the model. Every sliced
channel space is given its surviving size, and :func:`spa.model.metrics.measure` runs on those
shapes. This is exact for what ``measure`` counts, so a bisection over the ratio costs
milliseconds per step.

Latency cannot be estimated; it is measured (:func:`find_ratio_for_latency`). The MACs estimate
brackets the search first: a measured speedup rarely exceeds the ideal one (MACs before /
after), so no ratio below the one that removes just enough MACs is tried. Then each bisection
step rewrites a candidate from a copy of the model and times it against the original in
onnxruntime, interleaved, with few runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from spa.analysis.groups import Group
from spa.errors import InvalidArgumentError, TargetError
from spa.model.graph import ModelContext
from spa.model.metrics import Cost, measure
from spa.model.runtime import random_inputs
from spa.planning.plan import kept_spaces, make_plan
from spa.planning.selection import kept_for_counts, multiple_of, select_units
from spa.report.bench import bench_model, bench_models, resolve_shapes
from spa.rewrite import apply_plan

log = logging.getLogger(__name__)


def estimate(ctx: ModelContext, groups: list[Group], kept_units: dict[int, np.ndarray]) -> Cost:
    """Params and MACs of the model once ``kept_units`` survive (size is not estimated)."""
    shapes = dict(ctx.shapes)
    for (t, a), keep in kept_spaces(groups, kept_units).items():
        s = shapes.get(t)
        if s is not None and a < len(s):
            shapes[t] = tuple(len(keep) if i == a else d for i, d in enumerate(s))
    view = dataclasses.replace(ctx, shapes=shapes, _folded={}, _const_memo=dict(ctx._const_memo))
    cost = measure(view, with_size=False)
    return cost


@dataclass
class TargetResult:
    kind: str  # "macs", "params", "latency" or "speedup"
    target: float  # macs/params: fraction of the original; latency: ms; speedup: factor
    ratio: float
    achieved: float  # macs/params: fraction (estimated); latency: measured ms; speedup: measured factor
    kept_units: dict[int, np.ndarray]
    #: latency/speedup: what was measured (baseline, speedups, every trial); see find_ratio_for_latency.
    details: dict[str, Any] = field(default_factory=dict)


def find_ratio(ctx: ModelContext, groups: list[Group], scores: dict[int, np.ndarray], *, target_macs: float | None = None,
               target_params: float | None = None, global_ranking: bool = False, round_to: int | str = 1,
               steps: int = 24) -> TargetResult:
    """The smallest ratio whose estimated cost is at most the target fraction of the original.

    The bisection is over exact counts; with rounding (``round_to`` other than 1) the counts are
    then rounded inside the budget (:func:`_round_within`), since rounding after a uniform ratio
    jumps (a 16-unit group keeps 16 or 8). A result further than :data:`CLOSE` below the target
    is logged as a warning."""
    if (target_macs is None) == (target_params is None):
        raise InvalidArgumentError("give exactly one of --target-macs and --target-params")
    kind, target = ("macs", target_macs) if target_macs is not None else ("params", target_params)
    assert target is not None
    if not 0.0 < target <= 1.0:
        raise InvalidArgumentError(f"--target-{kind} is a fraction of the original in (0, 1], got {target}")
    full = getattr(measure(ctx, with_size=False), kind)
    exact = _bisect(ctx, groups, scores, kind, target, full, global_ranking, steps)
    rounding = any(multiple_of(g.n_units, round_to) > 1 for g in groups if g.id in scores)
    found = _round_within(ctx, groups, scores, exact, round_to, full) if rounding else exact
    if found.achieved < CLOSE * target:
        also = f" (exact channel counts, --round-to 1: {exact.achieved:.3f})" if rounding else ""
        log.warning("--target-%s %g: the closest SPA finds within the budget leaves %.3f of the original%s; a "
                    "uniform ratio moves every group at once%s", kind, target, found.achieved, also,
                    ", and rounded counts move in whole multiples" if rounding else "")
    return found


def _bisect(ctx: ModelContext, groups: list[Group], scores: dict[int, np.ndarray], kind: str, target: float,
            full: int, global_ranking: bool, steps: int) -> TargetResult:
    """The smallest ratio (exact counts) whose estimated ``kind`` is at most ``target`` of ``full``."""

    def fraction(ratio: float) -> tuple[float, dict[int, np.ndarray]]:
        kept = select_units(groups, scores, ratio, global_ranking=global_ranking, round_to=1)
        return getattr(estimate(ctx, groups, kept), kind) / max(full, 1), kept

    lo, hi = 0.0, 0.999
    best = fraction(0.0)
    if best[0] <= target:
        return TargetResult(kind, target, 0.0, best[0], best[1])
    top = fraction(hi)
    if top[0] > target:
        log.warning("target %s %.3f is out of reach: the most SPA can remove leaves %.3f", kind, target, top[0])
        return TargetResult(kind, target, hi, top[0], top[1])
    best = top
    for _ in range(steps):
        mid = (lo + hi) / 2
        got = fraction(mid)
        if got[0] <= target:
            hi, best = mid, got
        else:
            lo = mid
    return TargetResult(kind, target, hi, best[0], best[1])


#: Rounded counts within this fraction of a cost target are close enough (no more swaps) ...
CLOSE = 0.95
#: ... and at most this many candidate swaps are estimated.
MAX_SWAPS = 200


def _round_within(ctx: ModelContext, groups: list[Group], scores: dict[int, np.ndarray], exact: TargetResult,
                  round_to: int | str, full: int) -> TargetResult:
    """Round every group's kept count of the exact-count solution ``exact`` to its multiple, up
    where the budget allows and down where it does not: all groups start rounded up; while the
    cost is over the target, the group that loses the least score by rounding down (scores
    relative to the group's mean) is rounded down; then each rounded-down group goes back up
    (the costliest loss first) where the budget still allows it; then, while the cost is under
    :data:`CLOSE` of the target, the move of one group up a multiple (and another down one) that
    comes closest to the target without passing it is made (at most :data:`MAX_SWAPS` estimates).
    Rounding every group down costs at most what ``exact`` costs, so the target stays met
    whenever ``exact`` met it."""
    by_id = {g.id: g for g in groups}
    counts = {gid: len(units) for gid, units in exact.kept_units.items()}
    up, down = dict(counts), dict(counts)
    step = {gid: multiple_of(by_id[gid].n_units, round_to) for gid in counts}
    for gid, k in counts.items():
        m = step[gid]
        if m > 1:
            up[gid] = min(by_id[gid].n_units, math.ceil(k / m) * m)
            down[gid] = max(1, min(k, (k // m) * m or m))  # below one multiple: the exact count (in budget)
    flexible = [gid for gid in counts if up[gid] != down[gid]]

    def loss(gid: int) -> float:
        s = scores[gid] / (float(np.mean(np.abs(scores[gid]))) or 1.0)
        ranked = np.sort(s)[::-1]
        return float(ranked[down[gid]:up[gid]].sum())

    def cost(c: dict[int, int]) -> tuple[float, dict[int, np.ndarray]]:
        kept = kept_for_counts(groups, scores, c)
        return getattr(estimate(ctx, groups, kept), exact.kind) / max(full, 1), kept

    current = dict(up)
    got = cost(current)
    for gid in sorted(flexible, key=loss):
        if got[0] <= exact.target:
            break
        current[gid] = down[gid]
        got = cost(current)
    for gid in sorted((g for g in flexible if current[g] == down[g]), key=loss, reverse=True):
        trial = {**current, gid: up[gid]}  # back up where the budget still allows it, costliest loss first
        again = cost(trial)
        if again[0] <= exact.target:
            current, got = trial, again
    # Closer to the target: move one group up a multiple (and another down one) where that stays
    # within the budget, the move that comes closest to the target first, a bounded number of times.
    tries = 0
    while got[0] < CLOSE * exact.target and tries < MAX_SWAPS:
        best_trial: tuple[float, dict[int, int], dict[int, np.ndarray]] | None = None
        raise_ = [g for g in flexible if current[g] + step[g] <= by_id[g].n_units]
        lower = [g for g in flexible if current[g] - step[g] >= step[g]]
        for i in raise_:
            for j in [None, *(g for g in lower if g != i)]:
                if tries >= MAX_SWAPS:
                    break
                trial = {**current, i: current[i] + step[i]}
                if j is not None:
                    trial[j] = current[j] - step[j]
                tries += 1
                again = cost(trial)
                if got[0] < again[0] <= exact.target and (best_trial is None or again[0] > best_trial[0]):
                    best_trial = (again[0], trial, again[1])
        if best_trial is None:
            break
        current, got = best_trial[1], (best_trial[0], best_trial[2])
    if got[0] > exact.target and exact.achieved <= exact.target:  # cannot happen (monotone); keep exact counts
        log.warning("rounding could not meet the %s target; kept counts are exact", exact.kind)
        return exact
    return dataclasses.replace(exact, achieved=got[0], kept_units=got[1])


# ---- measured latency ----------------------------------------------------------------------

#: Highest ratio a latency search tries.
MAX_RATIO = 0.99
#: Bisection stops when the bracket is narrower than this (in ratio) ...
RATIO_TOLERANCE = 0.02
#: ... or after this many measured candidates.
MAX_TRIALS = 10
#: Untimed and timed runs of each model (the original and a candidate) per trial; 20 timed runs
#: are two turns of ten each, so that the two models alternate (see :data:`spa.report.bench.CHUNK`).
TRIAL_WARMUP, TRIAL_RUNS = 2, 20


def candidate_model(model: onnx.ModelProto, ctx: ModelContext, groups: list[Group],
                    kept_units: dict[int, np.ndarray]) -> onnx.ModelProto:
    """A pruned copy of ``model`` (which ``ctx`` indexes); ``model`` itself is not changed.

    Not checked and not compensated: it is only timed (a compensating criterion changes
    weights, not the graph or its sizes).
    """

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    view = ModelContext.build(copy)
    view.shapes, view.dtypes = dict(ctx.shapes), dict(ctx.dtypes)
    for f in dataclasses.fields(ctx):  # settings (opset, ...) rather than indexes
        value = getattr(ctx, f.name)
        if not f.name.startswith("_") and isinstance(value, (str, int, bool)):
            setattr(view, f.name, value)
    plan = make_plan("candidate", "candidate", 0.0, groups, kept_units, view)
    return apply_plan(copy, view, plan, kept_spaces(groups, kept_units)) if plan.slices else copy


@dataclass
class Trial:
    """One measured candidate."""

    ratio: float
    macs_fraction: float  # estimated MACs / original MACs
    median_ms: float
    baseline_ms: float  # the original's median, measured in the same interleaved run
    met: bool

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.median_ms if self.median_ms > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "speedup": self.speedup,
                "ideal_speedup": 1.0 / self.macs_fraction if self.macs_fraction > 0 else None}


def bisect_ratio(meets: Callable[[float], bool], lo: float, hi: float, tolerance: float = RATIO_TOLERANCE,
                 max_steps: int = MAX_TRIALS) -> float:
    """The smallest ratio in ``(lo, hi]`` that ``meets``, assuming ``meets(hi)`` and not ``meets(lo)``;
    bisects until the bracket is narrower than ``tolerance`` or ``max_steps`` calls were made."""
    for _ in range(max_steps):
        if hi - lo <= tolerance:
            break
        mid = (lo + hi) / 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


def find_ratio_for_latency(model: onnx.ModelProto, ctx: ModelContext, groups: list[Group],
                           scores: dict[int, np.ndarray], *, target_ms: float | None = None,
                           target_speedup: float | None = None, global_ranking: bool = False, round_to: int | str = 1,
                           device: str = "cpu", threads: int = 0, seed: int = 0,
                           shapes: dict[str, list[int]] | None = None) -> TargetResult:
    """The smallest ratio (to :data:`RATIO_TOLERANCE`) whose pruned model measures at most
    ``target_ms`` ms, or at least ``target_speedup`` times faster than the original.

    Each trial rewrites a candidate (:func:`candidate_model`) and times it with the original in
    one interleaved onnxruntime run (:data:`TRIAL_WARMUP` + :data:`TRIAL_RUNS` runs each, seeded
    random inputs, ``device`` and ``threads``). A latency target compares the candidate's median;
    a speedup target compares the original's median over the candidate's, which is robust to
    load elsewhere on the machine. Ratios below the one whose MACs alone would just give the
    needed speedup are not tried. ``shapes`` are the input shapes timed (default: bench's, see
    :func:`spa.report.bench.resolve_shapes`; :func:`spa.prune` gives the typical sizes). Raises
    :class:`~spa.errors.TargetError` when even :data:`MAX_RATIO` does not meet the target.
    """

    started = time.perf_counter()
    if (target_ms is None) == (target_speedup is None):
        raise InvalidArgumentError("give exactly one of --target-latency and --target-speedup")
    if target_ms is not None and not (target_ms > 0 and math.isfinite(target_ms)):
        raise InvalidArgumentError(f"--target-latency is in milliseconds and must be > 0, got {target_ms}")
    if target_speedup is not None and not (target_speedup >= 1 and math.isfinite(target_speedup)):
        raise InvalidArgumentError(f"--target-speedup is a factor >= 1 (2 = twice as fast), got {target_speedup}")
    concrete, _ = resolve_shapes(model, shapes)
    feeds = random_inputs(model, seed=seed, shapes=concrete)
    bench_kw: dict[str, Any] = {"device": device, "threads": threads, "warmup": TRIAL_WARMUP, "runs": TRIAL_RUNS,
                                "inputs": feeds}
    full_macs = max(measure(ctx, with_size=False).macs, 1)
    speedup_goal = float(target_speedup) if target_speedup is not None else 1.0
    trials: list[Trial] = []

    def kept_at(ratio: float) -> dict[int, np.ndarray]:
        return select_units(groups, scores, ratio, global_ranking=global_ranking, round_to=round_to)

    def meets(ratio: float) -> bool:
        kept = kept_at(ratio)
        frac = estimate(ctx, groups, kept).macs / full_macs
        cand = candidate_model(model, ctx, groups, kept)
        base, got = bench_models([model, cand], names=["original", f"ratio {ratio:.3f}"], **bench_kw)
        del cand
        if target_ms is not None:
            ok = got.median_ms <= target_ms
        else:
            ok = base.median_ms / got.median_ms >= speedup_goal
        trials.append(Trial(ratio, frac, got.median_ms, base.median_ms, bool(ok)))
        log.info("latency search: ratio %.3f -> %.3f ms (original %.3f ms, %.2fx; MACs %.1f%%)%s", ratio,
                 got.median_ms, base.median_ms, trials[-1].speedup, 100 * frac, " meets the target" if ok else "")
        return bool(ok)

    baseline = bench_model(model, name="original", **bench_kw).median_ms if target_ms is not None else None
    needed = baseline / target_ms if baseline is not None and target_ms else float(target_speedup or 1.0)
    if needed <= 1.0:
        if baseline is None:
            baseline = bench_model(model, name="original", **bench_kw).median_ms
        log.info("the original (%.3f ms) already meets the target: nothing to prune", baseline)
        details = _details(target_ms, target_speedup, baseline, None, trials, device, threads)
        details["seconds"] = time.perf_counter() - started
        kind, goal = ("latency", target_ms) if target_ms is not None else ("speedup", speedup_goal)
        return TargetResult(kind, goal, 0.0, baseline if target_ms is not None else 1.0, kept_at(0.0), details)
    # Below the ratio whose MACs give exactly the needed speedup, the ideal speedup is too small.
    lo = find_ratio(ctx, groups, scores, target_macs=min(1.0, 1.0 / needed), global_ranking=global_ranking,
                    round_to=round_to).ratio
    lo = min(lo, MAX_RATIO)
    if lo > 0 and meets(lo):
        ratio = lo
    elif lo >= MAX_RATIO or not meets(MAX_RATIO):
        last = trials[-1]
        what = f"{target_ms:g} ms" if target_ms is not None else f"a {target_speedup:g}x speedup"
        raise TargetError(f"target of {what} is out of reach: at ratio {last.ratio:.2f} (the most SPA tries) the "
                          f"pruned model measures {last.median_ms:.3f} ms against {last.baseline_ms:.3f} ms for the "
                          f"original ({last.speedup:.2f}x; ideal {1 / max(last.macs_fraction, 1e-12):.2f}x); "
                          "ask for less, or exclude fewer layers")
    else:
        ratio = bisect_ratio(meets, lo, MAX_RATIO)
    final = next(t for t in reversed(trials) if t.ratio == ratio)
    details = _details(target_ms, target_speedup, final.baseline_ms, final, trials, device, threads)
    details["seconds"] = time.perf_counter() - started
    kind, goal, achieved = (("latency", target_ms, final.median_ms) if target_ms is not None
                            else ("speedup", speedup_goal, final.speedup))
    return TargetResult(kind, float(goal), ratio, achieved, kept_at(ratio), details)


def _details(target_ms: float | None, target_speedup: float | None, baseline_ms: float, final: Trial | None,
             trials: list[Trial], device: str, threads: int) -> dict[str, Any]:
    return {
        "baseline_ms": baseline_ms,
        "measured_ms": final.median_ms if final else baseline_ms,
        "measured_speedup": final.speedup if final else 1.0,
        "ideal_speedup": 1.0 / final.macs_fraction if final and final.macs_fraction > 0 else 1.0,
        "trials": [t.to_dict() for t in trials],
        "device": device, "threads": threads, "warmup": TRIAL_WARMUP, "runs": TRIAL_RUNS,
    }
