"""Choosing which units of each group survive, from scores and a ratio.

* Per group (default): remove ``floor(ratio · n)`` units with the lowest scores, keep >= 1.
* Global (``--global``): scores are divided by their group's mean, then the lowest
  ``floor(ratio · total)`` units across all groups are removed, each group keeping >= 1.
* ``round_to=N``: the number of kept units is rounded *up* to a multiple of N (never above n).
  ``round_to="auto"`` rounds to a multiple of :data:`AUTO_MULTIPLE` in groups of at least
  :data:`AUTO_MIN_UNITS` units and not in smaller ones: onnxruntime's CPU convolutions run much
  faster on channel counts that fill its vector blocks, while rounding a small group up would
  undo most of its pruning (measured in ``docs/benchmarks.md``, "Channel rounding").

Every member tensor keeps at least one index (see ``_cover_members``). Ties are broken by
unit index, so the choice is deterministic.
"""

from __future__ import annotations

import math

import numpy as np

from spa.analysis.groups import Group
from spa.errors import InvalidArgumentError


def check_ratio(ratio: float) -> float:
    if not (isinstance(ratio, (int, float)) and 0.0 <= float(ratio) < 1.0) or math.isnan(ratio):
        raise InvalidArgumentError(f"--ratio must be in [0, 1), got {ratio}")
    return float(ratio)


#: ``round_to="auto"``: multiples of this many units ...
AUTO_MULTIPLE = 8
#: ... in groups of at least this many units. Measured on a MobileNetV2-shaped model, rounding
#: only groups of >= 32 or >= 64 units left it at 1.6x instead of 2.0x: its 16- and 24-channel
#: layers must be multiples of 8 too. A smaller group would round up to all of its units.
AUTO_MIN_UNITS = 16


def check_round_to(round_to: int | str) -> int | str:
    """``"auto"`` or an integer >= 1 (also given as text, e.g. from the command line)."""
    if isinstance(round_to, str):
        if round_to.strip().lower() == "auto":
            return "auto"
        try:
            round_to = int(round_to)
        except ValueError:
            raise InvalidArgumentError(f"--round-to must be 'auto' or an integer >= 1, got {round_to!r}") from None
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise InvalidArgumentError(f"--round-to must be 'auto' or an integer >= 1, got {round_to!r}")
    return round_to


def multiple_of(n: int, round_to: int | str) -> int:
    """The multiple a group of ``n`` units keeps (1: exact counts)."""
    round_to = check_round_to(round_to)
    return (AUTO_MULTIPLE if n >= AUTO_MIN_UNITS else 1) if isinstance(round_to, str) else round_to


def _round_keep(n_keep: int, n: int, round_to: int | str) -> int:
    m = multiple_of(n, round_to)
    if m > 1:
        n_keep = min(n, math.ceil(n_keep / m) * m)
    return max(1, min(n, n_keep))


def kept_for_counts(groups: list[Group], scores: dict[int, np.ndarray], counts: dict[int, int]) -> dict[int, np.ndarray]:
    """The ``counts[g]`` best-scoring units of every group in ``counts`` (each member tensor keeps one)."""
    by_id = {g.id: g for g in groups}
    return {gid: _cover_members(by_id[gid], _top(scores[gid], max(1, min(by_id[gid].n_units, k))), scores[gid])
            for gid, k in counts.items()}


def unchanged_reason(n: int, ratio: float, round_to: int | str, global_ranking: bool) -> str:
    """Why a prunable group of ``n`` units keeps all of them (for the report)."""
    if global_ranking:
        return "the global ranking (--global) removed none of its units"
    drop = math.floor(ratio * n)
    if drop == 0:
        return f"ratio {ratio:g} removes floor({ratio:g} x {n}) = 0 of its {n} units"
    round_to = check_round_to(round_to)
    multiple = multiple_of(n, round_to)
    if multiple > 1 and _round_keep(n - drop, n, round_to) == n:
        how = f"--round-to {round_to}" + (f" (multiples of {multiple} here)" if isinstance(round_to, str) else "")
        return f"ratio {ratio:g} would remove {drop} of its {n} units; {how} rounds the {n - drop} kept up to all {n}"
    return "every unit the ratio would remove is the last of a member tensor, which keeps one"


def _top(scores: np.ndarray, n_keep: int) -> np.ndarray:
    order = np.lexsort((np.arange(scores.size), -scores))  # high score first, then low index
    return np.sort(order[:n_keep])


def select_units(
    groups: list[Group],
    scores: dict[int, np.ndarray],
    ratio: float,
    *,
    global_ranking: bool = False,
    round_to: int | str = 1,
) -> dict[int, np.ndarray]:
    """Kept unit indices for every group in ``scores`` (those are the prunable ones)."""
    ratio = check_ratio(ratio)
    round_to = check_round_to(round_to)
    by_id = {g.id: g for g in groups}
    for gid, s in scores.items():
        if s.shape != (by_id[gid].n_units,) or not np.all(np.isfinite(s)):
            raise ValueError(f"criterion returned bad scores for group {gid}")
    if not global_ranking:
        kept = {
            gid: _top(s, _round_keep(s.size - math.floor(ratio * s.size), s.size, round_to))
            for gid, s in scores.items()
        }
    else:
        kept = _select_global(scores, ratio, round_to)
    return {gid: _cover_members(by_id[gid], units, scores[gid]) for gid, units in kept.items()}


def _cover_members(group: Group, kept: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Keep at least one index of every member tensor (no tensor may lose a whole axis).

    A dense block's concat is one group, but each concatenated conv must keep a channel: where a
    member would be emptied, its best-scoring unit is kept too.
    """
    extra: list[int] = []
    for units in group.unit_of.values():
        if units.size and not np.isin(units, kept).any():
            candidates = np.unique(units)
            extra.append(int(candidates[np.argmax(scores[candidates])]))
    return np.union1d(kept, extra) if extra else kept


def _select_global(scores: dict[int, np.ndarray], ratio: float, round_to: int | str) -> dict[int, np.ndarray]:
    gids = list(scores)
    norm = [scores[g] / (float(np.mean(np.abs(scores[g]))) or 1.0) for g in gids]
    flat = np.concatenate(norm) if norm else np.zeros(0)
    owner = np.concatenate([np.full(len(n), i) for i, n in enumerate(norm)]) if norm else np.zeros(0, int)
    budget = math.floor(ratio * flat.size)
    remaining = {i: len(n) for i, n in enumerate(norm)}
    removed: dict[int, list[int]] = {i: [] for i in remaining}
    starts = np.cumsum([0] + [len(n) for n in norm])
    for k in np.lexsort((np.arange(flat.size), flat)):
        if budget == 0:
            break
        i = int(owner[k])
        if remaining[i] <= 1:
            continue
        removed[i].append(int(k - starts[i]))
        remaining[i] -= 1
        budget -= 1
    out: dict[int, np.ndarray] = {}
    for i, g in enumerate(gids):
        n = len(norm[i])
        n_keep = _round_keep(remaining[i], n, round_to)
        out[g] = _top(scores[g], n_keep) if n_keep != remaining[i] else np.setdiff1d(np.arange(n), removed[i])
    return out
