"""Remove dead nodes and initializers nothing reads any more, and sort nodes topologically.

Rules: a node none of whose outputs is read (by a node of the main graph or any subgraph) or
is a graph output is removed, repeatedly. ONNX ops have no side effects, so this is safe. Such
nodes are the shape arithmetic left behind when a computed constant was replaced by a literal,
or a computed bias replaced by a refitted one. An initializer that is neither a node input nor
a graph input or output is then removed. Nodes are ordered so every input is produced before it
is read (stable: an already sorted graph keeps its order).
Refuses (PassError) a graph with a cycle.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import onnx
from spa.passes.base import Pass, PassError, PassResult


def _used_names(graph: onnx.GraphProto) -> set[str]:
    used: set[str] = set()
    for node in graph.node:
        used.update(node.input)
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                used |= _used_names(sub)
                used.update(o.name for o in sub.output)
    return used


def dead_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes none of whose outputs is read (by a node of ``graph`` or any subgraph) or is a graph
    output; removing them may leave more such nodes."""
    used = _used_names(graph) | {o.name for o in graph.output}
    return [n for n in graph.node if not any(o and o in used for o in n.output)]


class CleanupPass(Pass):
    """Remove nodes whose outputs nothing reads (repeatedly) and initializers nothing reads, then
    sort the nodes topologically (stable). Leaves graph inputs, outputs and subgraph reads alone;
    refuses (PassError) a graph with a cycle.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = model.graph
        modified = False
        while True:
            dead = dead_nodes(g)
            if not dead:
                break
            for n in dead:
                g.node.remove(n)
            modified = True
        used = _used_names(g) | {o.name for o in g.output} | {i.name for i in g.input}
        # Deleted in place, last first: rebuilding the list would copy every kept weight.
        for k in reversed([k for k, t in enumerate(g.initializer) if t.name not in used]):
            del g.initializer[k]
            modified = True
        order = _toposort(g)
        if order != list(range(len(g.node))):
            nodes = [g.node[i] for i in order]
            copies = [onnx.NodeProto() for _ in nodes]
            for c, n in zip(copies, nodes):
                c.CopyFrom(n)
            del g.node[:]
            g.node.extend(copies)
            modified = True
        return PassResult(model, modified)


def _toposort(g: onnx.GraphProto) -> list[int]:
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    deps: dict[int, set[int]] = defaultdict(set)
    users: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(g.node):
        for name in set(n.input):
            j = producer.get(name)
            if j is not None and j != i and j not in deps[i]:
                deps[i].add(j)
                users[j].append(i)
    order: list[int] = []
    heap = [i for i in range(len(g.node)) if not deps[i]]  # smallest index first: stable
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for u in users[i]:
            deps[u].discard(i)
            if not deps[u]:
                heapq.heappush(heap, u)
    if len(order) != len(g.node):
        raise PassError("graph has a cycle; cannot sort it")
    return order
