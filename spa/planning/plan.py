"""The pruning plan (``spa-plan/1``): what was removed, as plain JSON.

A plan names every stored tensor of the *input* model whose shape changes — initializers and
``Constant`` outputs — with one entry per sliced axis, the original size and the sorted
original indices that survive. It also lists the groups (for people; replay does not need them).
A plan can be saved, inspected, replayed on the same model, and used by ``spa verify`` to build
the masked original.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spa.analysis.groups import Group
from spa.errors import PlanError
from spa.model.graph import ModelContext, Space
from spa.model.io import write_text_atomic

FORMAT = "spa-plan/1"


@dataclass
class SliceEntry:
    """Keep ``keep`` (sorted original indices) of axis ``axis`` (original size ``size``)."""

    initializer: str
    axis: int
    size: int
    keep: list[int]


@dataclass
class PlanGroup:
    id: int
    units: int
    kept_units: int
    members: list[str]
    status: str  # "pruned", "unchanged" or "blocked: <reason>"


@dataclass
class Plan:
    model: str
    criterion: str
    ratio: float
    slices: list[SliceEntry] = field(default_factory=list)
    groups: list[PlanGroup] = field(default_factory=list)
    compensated: bool = False
    #: Why masked equivalence is approximate (a normalisation spans a pruned axis), if it is.
    inexact: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    # ---- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": d.pop("format"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: Any, where: str = "plan") -> Plan:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise PlanError(f"{where}: not a {FORMAT} plan (format: {got!r})")
        try:
            slices = [SliceEntry(str(s["initializer"]), int(s["axis"]), int(s["size"]),
                                 [int(k) for k in s["keep"]]) for s in d["slices"]]
            groups = [PlanGroup(**g) for g in d.get("groups", [])]
            return cls(model=str(d.get("model", "")), criterion=str(d.get("criterion", "")),
                       ratio=float(d.get("ratio", 0.0)), slices=slices, groups=groups,
                       compensated=bool(d.get("compensated", False)),
                       inexact=[str(x) for x in d.get("inexact", [])],
                       options=dict(d.get("options", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{where}: malformed plan ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise PlanError(f"{p}: no such plan file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError(f"{p}: cannot read plan: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"{p}: not JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, str(p))

    @property
    def removed(self) -> int:
        return sum(s.size - len(s.keep) for s in self.slices)


def kept_spaces(groups: list[Group], kept_units: dict[int, np.ndarray]) -> dict[Space, np.ndarray]:
    """Surviving indices of every member space of every group that loses units."""
    by_id = {g.id: g for g in groups}
    out: dict[Space, np.ndarray] = {}
    for gid, units in kept_units.items():
        g = by_id[gid]
        if len(units) == g.n_units:
            continue
        for space in g.members:
            out[space] = g.kept_indices(space, units)
    return out


def make_plan(
    model_name: str,
    criterion: str,
    ratio: float,
    groups: list[Group],
    kept_units: dict[int, np.ndarray],
    ctx: ModelContext,
    options: dict[str, Any] | None = None,
    compensated: bool = False,
) -> Plan:
    """Build the plan for keeping ``kept_units`` of each group."""
    plan = Plan(model=model_name, criterion=criterion, ratio=ratio, compensated=compensated,
                options=dict(options or {}))
    kept = kept_spaces(groups, kept_units)
    for (t, a), keep in sorted(kept.items()):
        size = ctx.dim(t, a)
        if ctx.is_stored(t) and size is not None and len(keep) < size:  # only tensors that shrink
            plan.slices.append(SliceEntry(t, a, size, keep.tolist()))
    plan.inexact = sorted({m for g in groups if g.id in kept_units and len(kept_units[g.id]) < g.n_units
                           for m in g.inexact})
    for g in groups:
        if g.blocked:
            status = "blocked: " + "; ".join(g.blocked)
        elif g.id in kept_units and len(kept_units[g.id]) < g.n_units:
            status = "pruned"
        else:
            status = "unchanged"
        n_kept = len(kept_units[g.id]) if g.id in kept_units else g.n_units
        plan.groups.append(PlanGroup(g.id, g.n_units, n_kept, [f"{t}:{a}" for t, a in g.members], status))
    return plan


def units_from_plan(plan: Plan, groups: list[Group], ctx: ModelContext) -> dict[int, np.ndarray]:
    """Recover the kept units of every group from a plan's slices, checking it fits the model.

    Each entry says which units of its group it keeps and which it drops (a member may hold only
    some units, e.g. one input of a concat); a unit no entry drops is kept. Afterwards every
    stored member of the group must be sliced exactly as the plan says (or not at all). A prunable
    group the plan does not touch keeps all its units, as when the plan was made: a compensating
    criterion refits its consumers too, since their inputs may have changed upstream.
    """
    entries: dict[Space, SliceEntry] = {}
    for s in plan.slices:
        if (s.initializer, s.axis) in entries:
            raise PlanError(f"plan slices '{s.initializer}' axis {s.axis} twice")
        entries[(s.initializer, s.axis)] = s
    owner = {sp: g for g in groups for sp in g.members}
    dropped: dict[int, set[int]] = {}
    kept: dict[int, set[int]] = {}
    for space, entry in entries.items():
        g = owner.get(space)
        if g is None or not g.prunable:
            why = "not a channel space of this model" if g is None else "in a blocked group: " + "; ".join(g.blocked)
            raise PlanError(f"plan slices '{space[0]}' axis {space[1]}, which is {why}")
        if ctx.dim(*space) != entry.size:
            raise PlanError(f"plan says '{space[0]}' axis {space[1]} has size {entry.size}; "
                            f"the model has {ctx.dim(*space)} (a different model?)")
        keep = np.asarray(entry.keep, dtype=np.int64)
        if keep.size == 0 or np.any(np.diff(keep) <= 0) or keep[0] < 0 or keep[-1] >= entry.size:
            raise PlanError(f"plan keep list for '{space[0]}' axis {space[1]} is not sorted unique indices in range")
        units = g.unit_of[space]
        mask = np.zeros(len(units), bool)
        mask[keep] = True
        k, d = set(np.unique(units[mask]).tolist()), set(np.unique(units[~mask]).tolist())
        if k & d:
            raise PlanError(f"plan keeps part of a coupled unit in '{space[0]}' axis {space[1]}")
        kept.setdefault(g.id, set()).update(k)
        dropped.setdefault(g.id, set()).update(d)
    result: dict[int, np.ndarray] = {}
    by_id = {g.id: g for g in groups}
    for gid, drop in dropped.items():
        g = by_id[gid]
        if drop & kept[gid]:
            raise PlanError(f"plan is inconsistent within the group of {g.describe(ctx)}")
        units = np.setdiff1d(np.arange(g.n_units), sorted(drop))
        for space in g.params(ctx):
            expect = g.kept_indices(space, units)
            given = entries.get(space)
            if (given.keep if given else list(range(ctx.dim(*space) or 0))) != expect.tolist():
                raise PlanError(f"plan slices '{space[0]}' axis {space[1]} differently from the channels coupled to it")
        result[gid] = units
    for g in groups:
        if g.prunable and g.id not in result:
            result[g.id] = np.arange(g.n_units)
    return result
