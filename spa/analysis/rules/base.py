"""What a coupling rule is, and the registry that maps ONNX op types to rules.

A rule answers one question for one node: *given that axis ``a`` of tensor ``t`` (one of the
node's inputs or outputs) carries channels, which axes of the node's other tensors carry the
same channels, and how do their indices correspond?* The answer is a list of :class:`Edge`
objects (index maps between two channel spaces) and :class:`Block` objects (the channels cannot
be followed through this node; the group is not pruned).

A rule may also rewrite its node (``update_attributes`` / ``rewrite_constants``) after the channel spaces it touches have been sliced
(attributes such as ``group``, and integer shape constants such as a Reshape target).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx

from spa.model.graph import ModelContext, Space, attr_ints, node_label


@dataclass(frozen=True)
class Edge:
    """Index ``ia[k]`` of space ``a`` carries the same channel as index ``ib[k]`` of space ``b``."""

    a: Space
    b: Space
    ia: np.ndarray
    ib: np.ndarray


@dataclass(frozen=True)
class Block:
    """The group containing ``space`` cannot be pruned, because of ``reason``.

    When ``unless`` is given the block is lifted if any of those spaces ends up in the same
    group (used where a node can only be followed from one side).
    """

    space: Space
    reason: str
    unless: tuple[Space, ...] = ()


@dataclass
class Coupling:
    """A rule's answer: edges to follow, blocks to record, and inexactness notes."""

    edges: list[Edge] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)

    def link(self, a: Space, b: Space, ia: np.ndarray, ib: np.ndarray) -> Coupling:
        self.edges.append(Edge(a, b, np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)))
        return self

    def same(self, a: Space, b: Space, n: int) -> Coupling:
        """Index ``i`` of ``a`` is index ``i`` of ``b`` (both of size ``n``)."""
        r = np.arange(n, dtype=np.int64)
        return self.link(a, b, r, r)

    def block(self, space: Space, reason: str, unless: tuple[Space, ...] = ()) -> Coupling:
        self.blocks.append(Block(space, reason, unless))
        return self


KeptMap = Mapping[Space, np.ndarray]
"""For every sliced channel space, the sorted original indices that survive."""


class Rule:
    """Base class of the per-op-type coupling rules (see module docstring)."""

    op_types: ClassVar[tuple[str, ...]] = ()
    #: The domain of ``op_types``: "" is the default ONNX domain (nodes may also say "ai.onnx").
    domain: ClassVar[str] = ""

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        """Spaces where this node *creates* channels (e.g. a Conv weight's output axis)."""
        return []

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        raise NotImplementedError

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        """Fix attributes (e.g. ``group``) after slicing; return True if anything changed."""
        return False

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        """Fix integer inputs (shapes, sizes, starts) after slicing; return True if changed."""
        return False


class RewriteSink:
    """Where rules write replacement integer constants (so shared constants are never mutated).

    Writes are collected and applied together by :meth:`flush`, so every rule of one round reads
    the graph as it was before the round (a Reshape target built from a Slice of a shape sees the
    Slice's original bounds, even when the Slice rule rewrote them first).
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self._names = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
        self._pending: dict[tuple[str, int], tuple[onnx.NodeProto, int, np.ndarray]] = {}

    def current(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The value input ``index`` of ``node`` will hold: a pending write, else its initializer."""
        from onnx import numpy_helper

        if (node.name, index) in self._pending:
            return self._pending[(node.name, index)][2]
        for init in self.graph.initializer:
            if init.name == node.input[index]:
                return numpy_helper.to_array(init)
        return None

    def set_input_constant(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> bool:
        """Point input ``index`` of ``node`` at a new initializer holding ``value`` (at :meth:`flush`).

        Returns False (and changes nothing) when the input already holds ``value``.
        """
        old = self.current(node, index)
        if old is None:
            old = self._constant_node_value(node.input[index])
        if old is not None and old.dtype != value.dtype and old.dtype.kind in "iu" and value.dtype.kind in "iu":
            value = value.astype(old.dtype)  # tf2onnx builds shapes from int32 pieces, then Casts the Concat
        if old is not None and old.shape == value.shape and np.array_equal(old, value):
            return False
        self._pending[(node.name, index)] = (node, index, value)
        return True

    def _constant_node_value(self, name: str) -> np.ndarray | None:
        """The value of a ``Constant`` node's ``value`` tensor named ``name``, else None."""
        from onnx import numpy_helper

        for n in self.graph.node:
            if n.op_type == "Constant" and n.output and n.output[0] == name:
                for a in n.attribute:
                    if a.name == "value":
                        return numpy_helper.to_array(a.t)
        return None

    def flush(self) -> None:
        from onnx import numpy_helper

        for node, index, value in self._pending.values():
            name = f"{node.input[index]}__spa_{node.name}"
            while name in self._names:
                name += "_"
            self._names.add(name)
            self.graph.initializer.append(numpy_helper.from_array(value, name))
            node.input[index] = name
        self._pending.clear()


_REGISTRY: dict[str, Rule] = {}


def _key(domain: str, op_type: str) -> str:
    """Registry key: the op type in the default domain, ``domain::OpType`` in any other."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}::{op_type}"


def register(rule_cls: type[Rule]) -> type[Rule]:
    """Class decorator: register one instance of ``rule_cls`` for each of its op types (in its domain)."""
    inst = rule_cls()
    for op in rule_cls.op_types:
        key = _key(rule_cls.domain, op)
        if key in _REGISTRY:
            raise ValueError(f"two rules for op type {key}")
        _REGISTRY[key] = inst
    return rule_cls


def rule_for(node: onnx.NodeProto) -> Rule | None:
    """The rule for ``node``'s domain and op type, or None (``com.microsoft::Attention`` is not ``Attention``)."""
    return _REGISTRY.get(_key(node.domain, node.op_type))


def registered_op_types() -> list[str]:
    return sorted(_REGISTRY)


def position(node: onnx.NodeProto, tensor: str) -> tuple[str, int]:
    """``("in", i)`` or ``("out", i)`` for the first place ``tensor`` occurs in ``node``."""
    for i, t in enumerate(node.input):
        if t == tensor:
            return "in", i
    for i, t in enumerate(node.output):
        if t == tensor:
            return "out", i
    raise ValueError(f"{tensor} is not used by {node_label(node)}")


def dim_or_block(ctx: ModelContext, c: Coupling, space: Space, node: onnx.NodeProto, asked: Space) -> int | None:
    """The size of ``space``; when unknown, block the group of ``asked`` (the space the rule was
    asked about — without edges, only that group is sure to contain the problem)."""
    n = ctx.dim(*space)
    if n is None:
        c.block(asked, f"shape of '{space[0]}' axis {space[1]} is unknown at {node_label(node)}")
    return n


def ranks_or_block(ctx: ModelContext, c: Coupling, space: Space, node: onnx.NodeProto,
                   tensors: list[str]) -> list[int] | None:
    """The ranks of ``tensors``; when one is unknown, block ``space`` (the rule cannot place any
    axis without them) and return None."""
    ranks = [ctx.rank(t) for t in tensors]
    known = [r for r in ranks if r is not None]
    if len(known) != len(ranks):
        c.block(space, f"rank unknown at {node_label(node)}")
        return None
    return known


def rank_or_block(ctx: ModelContext, c: Coupling, space: Space, node: onnx.NodeProto, tensor: str) -> int | None:
    """The rank of ``tensor``; when unknown, block ``space`` and return None (see :func:`ranks_or_block`)."""
    ranks = ranks_or_block(ctx, c, space, node, [tensor])
    return None if ranks is None else ranks[0]


def tie(ctx: ModelContext, node: onnx.NodeProto, space: Space, sets: list[list[Space]]) -> Coupling:
    """Couple ``space`` index for index with every other member of the set that contains it.

    Blocks ``space`` when no set contains it: the rule does not know that axis.
    """
    c = Coupling()
    for members in sets:
        if space in members:
            n = dim_or_block(ctx, c, space, node, space)
            if n is not None:
                for s in members:
                    if s != space:
                        c.same(space, s, n)
            return c
    return c.block(space, f"{node_label(node)} cannot prune axis {space[1]} of '{space[0]}'")


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def int_input(node: onnx.NodeProto, ctx: ModelContext, i: int) -> list[int] | None:
    """Input ``i`` as a list of ints when it is a stored constant; None when absent/computed."""
    if len(node.input) <= i or not node.input[i]:
        return None
    v = ctx.constant_value(node.input[i])
    return None if v is None else [int(x) for x in v.reshape(-1)]


def axes_input(node: onnx.NodeProto, ctx: ModelContext, input_index: int) -> list[int] | None:
    """``axes`` from the attribute (old opsets) or from input ``input_index`` (new opsets)."""
    a = attr_ints(node, "axes")
    if a is not None:
        return a
    return int_input(node, ctx, input_index)


def identity_all(c: Coupling, ctx: ModelContext, node: onnx.NodeProto, space: Space, tensors: list[str]) -> Coupling:
    n = dim_or_block(ctx, c, space, node, space)
    if n is not None:
        for t in tensors:
            if t and t != space[0]:
                c.same(space, (t, space[1]), n)
    return c
