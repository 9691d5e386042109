"""The coupling graph: channel spaces ``(tensor, axis)`` joined by index maps.

Starting from the spaces where nodes create channels (a Conv's output channels, a Gemm's output
features), every node that writes or reads a reached tensor is asked, through its rule, which
other spaces carry the same channels. Nodes with no rule, model inputs and outputs, and unknown
sizes produce :class:`~spa.analysis.rules.Block` records instead of edges; nothing is guessed.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import networkx as nx
import numpy as np
import onnx

from spa.analysis.rules import Block, Coupling, Rule, rule_for
from spa.model.graph import ModelContext, Space, node_label

log = logging.getLogger(__name__)
T = TypeVar("T")
D = TypeVar("D")

Progress = Callable[[str, int, int], None]


@dataclass
class CouplingGraph:
    """Nodes are spaces; each edge holds a list of ``(from_space, ia, ib)`` index maps."""

    graph: nx.Graph = field(default_factory=nx.Graph)
    blocks: list[Block] = field(default_factory=list)
    inexact: dict[Space, list[str]] = field(default_factory=dict)

    def add(self, cpl: Coupling, asked: Space) -> list[Space]:
        """Record a rule's answer; return the spaces it newly names."""
        new: list[Space] = []
        for e in cpl.edges:
            for s in (e.a, e.b):
                if s not in self.graph:
                    self.graph.add_node(s)
                    new.append(s)
            if self.graph.has_edge(e.a, e.b):
                self.graph.edges[e.a, e.b]["maps"].append((e.a, e.ia, e.ib))
            else:
                self.graph.add_edge(e.a, e.b, maps=[(e.a, e.ia, e.ib)])
        for b in cpl.blocks:
            if b.space not in self.graph:
                self.graph.add_node(b.space)
            self.blocks.append(b)
        if cpl.inexact:
            self.inexact.setdefault(asked, []).extend(cpl.inexact)
        return new


def creates_channels(model: ModelContext | onnx.ModelProto) -> bool:
    """Whether any node of the main graph has a rule that can create channels (a Conv, a Gemm, a
    MatMul...). Without one, no group can form, whatever the shapes: the model has nothing to prune."""
    graph = (model.model if isinstance(model, ModelContext) else model).graph
    for node in graph.node:
        rule = rule_for(node)
        if rule is not None and type(rule).seeds is not Rule.seeds:
            return True
    return False


def build_coupling(ctx: ModelContext, progress: Progress | None = None) -> CouplingGraph:
    """Explore every channel space reachable from a channel-creating node."""
    cg = CouplingGraph()
    queue: deque[Space] = deque()
    for node in ctx.model.graph.node:
        rule = rule_for(node)
        if rule is not None:
            for s in _safe(lambda: rule.seeds(node, ctx), []):  # noqa: B023
                if s not in cg.graph:
                    cg.graph.add_node(s)
                    queue.append(s)
    done = 0
    while queue:
        space = queue.popleft()
        done += 1
        if progress is not None and done % 256 == 0:
            progress("couple", done, done + len(queue))
        queue.extend(_visit(ctx, cg, space))
    log.debug("coupling graph: %d spaces, %d edges, %d blocks", cg.graph.number_of_nodes(),
              cg.graph.number_of_edges(), len(cg.blocks))
    return cg


def _visit(ctx: ModelContext, cg: CouplingGraph, space: Space) -> list[Space]:
    tensor, axis = space
    new: list[Space] = []
    if ctx.is_interface(tensor):
        kind = "input" if tensor in ctx.graph_inputs else "output"
        cg.blocks.append(Block(space, f"model {kind} '{tensor}' axis {axis}: pruning would change the model's interface"))
    if ctx.dim(tensor, axis) is None:
        cg.blocks.append(Block(space, f"size of '{tensor}' axis {axis} is unknown"))
        return new
    for node in ctx.subgraph_readers.get(tensor, ()):
        cg.blocks.append(Block(space, f"read inside a subgraph of {node_label(node)}, which SPA cannot rewrite"))
    for node in ctx.touching(tensor):
        rule = rule_for(node)
        if rule is None:
            dom = f" (domain '{node.domain}')" if node.domain else ""
            cg.blocks.append(Block(space, f"reaches {node_label(node)}{dom}, which has no coupling rule"))
            continue
        cpl = _safe(lambda: rule.couple(node, ctx, space), None)  # noqa: B023
        if cpl is None:
            cpl = Coupling().block(space, f"coupling rule for {node_label(node)} failed; see log")
        elif not _in_range(ctx, cpl):
            log.warning("the coupling rule for %s linked indices past a tensor's size; its group is blocked",
                        node_label(node))
            cpl = Coupling().block(space, f"coupling rule for {node_label(node)} gave indices out of range; see log")
        _spread_folds(ctx, cpl)
        new.extend(cg.add(cpl, space))
    return new


def _in_range(ctx: ModelContext, cpl: Coupling) -> bool:
    """Every index of every edge lies inside its space (a rule bug would merge unrelated units)."""
    for e in cpl.edges:
        for s, idx in ((e.a, e.ia), (e.b, e.ib)):
            n = ctx.dim(*s)
            if idx.size and n is not None and (int(idx.max()) >= n or int(idx.min()) < 0):
                return False
    return True


def _spread_folds(ctx: ModelContext, cpl: Coupling) -> None:
    """A dynamic axis linked to a folded ``B·H`` axis is folded too (it carries the same H)."""
    for e in cpl.edges:
        for p, q in ((e.a, e.b), (e.b, e.a)):
            if ctx.is_folded(p) and q not in ctx.fold_dims:
                sq = ctx.shape(q[0])
                if sq is not None and q[1] < len(sq) and sq[q[1]] is None:
                    ctx.fold_dims[q] = ctx.fold_dims[p]


def _safe(fn: Callable[[], T], default: D) -> T | D:
    """Run a rule; an exception in one rule blocks its group instead of aborting the run."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - a rule bug must not lose the rest of the model
        log.warning("a coupling rule raised; its group is blocked", exc_info=True)
        return default


def edge_arrays(cg: CouplingGraph, spaces: list[Space], offsets: dict[Space, int]) -> tuple[np.ndarray, np.ndarray]:
    """All index maps among ``spaces`` as global element ids (for union-find)."""
    a_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    for u, v, data in cg.graph.subgraph(spaces).edges(data=True):
        for src, ia, ib in data["maps"]:
            dst = v if src == u else u
            if src not in offsets or dst not in offsets:
                continue
            a_parts.append(ia + offsets[src])
            b_parts.append(ib + offsets[dst])
    if not a_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a_parts), np.concatenate(b_parts)
