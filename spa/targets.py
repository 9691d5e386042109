"""Pruning to a budget: find the ratio that meets a MACs or parameter target.

The cost of a candidate selection is estimated without rewriting the model. Every sliced
channel space is given its surviving size, and :func:`spa.metrics.measure` runs on those
shapes. This is exact for what ``measure`` counts, so a bisection over the ratio costs
milliseconds per step.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from spa.errors import InvalidArgumentError
from spa.graph import ModelContext
from spa.groups import Group
from spa.metrics import Cost, measure
from spa.plan import kept_spaces
from spa.selection import select_units

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
    kind: str  # "macs" or "params"
    target: float  # fraction of the original
    ratio: float
    achieved: float  # fraction of the original
    kept_units: dict[int, np.ndarray]


def find_ratio(ctx: ModelContext, groups: list[Group], scores: dict[int, np.ndarray], *, target_macs: float | None = None,
               target_params: float | None = None, global_ranking: bool = False, round_to: int = 1,
               steps: int = 24) -> TargetResult:
    """The smallest ratio whose estimated cost is at most the target fraction of the original."""
    if (target_macs is None) == (target_params is None):
        raise InvalidArgumentError("give exactly one of --target-macs and --target-params")
    kind, target = ("macs", target_macs) if target_macs is not None else ("params", target_params)
    assert target is not None
    if not 0.0 < target <= 1.0:
        raise InvalidArgumentError(f"--target-{kind} is a fraction of the original in (0, 1], got {target}")
    base = measure(ctx, with_size=False)
    full = getattr(base, kind)

    def fraction(ratio: float) -> tuple[float, dict[int, np.ndarray]]:
        kept = select_units(groups, scores, ratio, global_ranking=global_ranking, round_to=round_to)
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
