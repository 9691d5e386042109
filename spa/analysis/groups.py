"""Groups: connected sets of coupled channel spaces, split into prunable units.

A *unit* is the smallest set of indices that must be removed together: one channel of a plain
conv (with the matching BN entries, the next layer's weight columns and, through a residual
join, the same channel of every branch), a whole conv group for grouped convs, or a block of
features behind a Flatten. Units come from a union-find over every index of every member space.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from spa.analysis.coupling import CouplingGraph, edge_arrays
from spa.model.graph import ModelContext, Space


@dataclass
class Group:
    """One connected set of channel spaces."""

    id: int
    members: list[Space]
    unit_of: dict[Space, np.ndarray]
    n_units: int
    blocked: list[str] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.blocked and self.n_units >= 2

    def params(self, ctx: ModelContext) -> list[Space]:
        """Members that are stored tensors (initializers or Constant outputs)."""
        return [s for s in self.members if ctx.is_stored(s[0])]

    def kept_indices(self, space: Space, kept_units: np.ndarray) -> np.ndarray:
        """Sorted indices of ``space`` that survive when ``kept_units`` are kept."""
        return np.flatnonzero(np.isin(self.unit_of[space], kept_units))

    def describe(self, ctx: ModelContext) -> str:
        """A short human name: the first weight member, or the first member."""
        for t, a in self.members:
            if ctx.is_stored(t):
                return f"{t}[{a}]"
        return f"{self.members[0][0]}[{self.members[0][1]}]"


def find_groups(cg: CouplingGraph, ctx: ModelContext) -> list[Group]:
    """Split the coupling graph into groups and compute their units and block reasons."""
    blocks_by_space: dict[Space, list] = {}
    for b in cg.blocks:
        blocks_by_space.setdefault(b.space, []).append(b)
    groups: list[Group] = []
    comps = sorted((sorted(c) for c in nx.connected_components(cg.graph)), key=lambda c: _order_key(ctx, c))
    for gid, spaces in enumerate(comps):
        members = set(spaces)
        reasons: list[str] = []
        for s in spaces:
            for b in blocks_by_space.get(s, ()):
                if b.unless and any(u in members for u in b.unless):
                    continue
                if b.reason not in reasons:
                    reasons.append(b.reason)
        unit_of, n_units = _units(cg, ctx, spaces)
        if not reasons and not any(ctx.is_stored(t) for t, _ in spaces):
            reasons.append("no weight to slice in this group")
        inexact = [m for s in spaces for m in cg.inexact.get(s, ())]
        groups.append(Group(gid, spaces, unit_of, n_units, reasons, sorted(set(inexact))))
    return groups


def _order_key(ctx: ModelContext, spaces: list[Space]) -> int:
    """Order groups by where they first appear in the graph (producer node index)."""
    best = len(ctx.node_index)
    for t, _ in spaces:
        p = ctx.producer.get(t)
        if p is not None:
            best = min(best, ctx.node_index[p.name])
    return best


def _units(cg: CouplingGraph, ctx: ModelContext, spaces: list[Space]) -> tuple[dict[Space, np.ndarray], int]:
    sizes = {s: (ctx.dim(*s) or 0) for s in spaces}
    offsets: dict[Space, int] = {}
    total = 0
    for s in spaces:
        if sizes[s]:
            offsets[s] = total
            total += sizes[s]
    a, b = edge_arrays(cg, spaces, offsets)
    labels = _connected_labels(total, a, b)
    uniq, inverse = np.unique(labels, return_inverse=True)
    return {s: inverse[offsets[s] : offsets[s] + sizes[s]] for s in offsets}, int(uniq.size)


def _connected_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find by min-label propagation with pointer jumping; label = smallest element id."""
    labels = np.arange(n, dtype=np.int64)
    if a.size == 0:
        return labels
    while True:
        m = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            return labels
        labels = new


def apply_norm_policy(groups: list[Group], allow_inexact: bool) -> None:
    """Block groups whose pruning would change a normalisation's statistics, unless allowed."""
    if allow_inexact:
        return
    for g in groups:
        if g.inexact and not g.blocked:
            g.blocked.append(f"{g.inexact[0]} (pruning it is approximate; opt in with --prune-norm-axes)")


def apply_exclusions(groups: list[Group], ctx: ModelContext, patterns: list[str]) -> None:
    """Block every group with a member tensor, or a node touching one, matching a pattern."""
    if not patterns:
        return
    for g in groups:
        for t, _ in g.members:
            names = [t] + [n.name for n in ctx.touching(t)]
            hit = next((p for p in patterns for nm in names if fnmatch.fnmatchcase(nm, p)), None)
            if hit is not None:
                g.blocked.append(f"excluded by --exclude '{hit}' (matches '{t}' or a node using it)")
                break
