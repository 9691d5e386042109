"""Normalisation of SPA's working copy of a model, before it is indexed and coupled, and the
tidying of the pruned model after.

Exporters store the same thing in different ways. Each step here rewrites one of those ways into
the form the coupling rules, criteria and rewrite passes expect, without changing what the model
computes. The caller's model is never touched: :func:`normalize` runs on the working copy.

0. In a model with nodes no graph output depends on, those nodes and the initializers nothing reads
   any more are removed (``CleanupPass``): the pruned model would drop them anyway, and slicing
   them is pointless.
1. Float weights held in ``Constant`` nodes become initializers (``LiftConstantsPass``), and so do
   weights the model computes from other weights (weight standardisation, a bias with a zeroed
   slice: ``FoldWeightComputationsPass``; :func:`spa.check.verify.mask_model` folds them alike).
2. A parameter read by several layers (equal constants merged by tf2onnx) gets one view per use
   (``UntieParametersPass``), so each layer's channels are sliced on their own. After coupling,
   :func:`retie_uses` joins again the uses that coupling put in one place (the same group, the
   same units: a module applied twice); the others are named after the uses they serve
   (``W__spa_use1_3``), which :func:`untie_for_plan` reproduces on the original model, so masked
   equivalence and plan replay see the same tensors. :func:`share_unsliced_uses` lets the uses
   that were not sliced read the shared tensor again in the output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import onnx
from spa.passes.cleanup import CleanupPass, dead_nodes
from spa.passes.fold_identity_gather import FoldIdentityGatherPass
from spa.passes.fold_weight_computations import FoldWeightComputationsPass
from spa.passes.lift_constants import LiftConstantsPass
from spa.passes.untie_parameters import UntieParametersPass, parameter_uses, parse_use_name, use_name

from spa.model.graph import Space

log = logging.getLogger(__name__)


class _Grouped(Protocol):
    id: int
    members: list[Space]
    unit_of: dict[Space, np.ndarray]


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``model`` in place (steps 0 to 2 of the module docstring) and return it. Deterministic."""

    if dead_nodes(model.graph):  # nothing reads them, so nothing should slice them
        CleanupPass()(model)
        log.info("removed nodes and initializers no output depends on")
    if LiftConstantsPass()(model).modified:
        log.debug("lifted float Constant nodes into initializers")
    if FoldWeightComputationsPass()(model).modified:  # weight standardisation, a bias with a zeroed slice
        log.debug("folded weights computed from other weights into initializers")
    if FoldIdentityGatherPass()(model).modified:  # dynamo's as_strided copy (ConvNeXt's LayerNorm2d head)
        log.debug("replaced gathers that copy a flattened tensor in order by Identity")
    if UntieParametersPass()(model).modified:
        log.debug("gave each use of a shared parameter its own view")
    return model


def _use_views(model: onnx.ModelProto) -> dict[str, dict[str, onnx.NodeProto]]:
    """``source -> {view name: Identity node}`` for the views :func:`normalize` made (still there)."""

    stored = {t.name for t in model.graph.initializer}
    out: dict[str, dict[str, onnx.NodeProto]] = {}
    for node in model.graph.node:
        parsed = parse_use_name(node.output[0]) if node.op_type == "Identity" and node.output else None
        if parsed is not None and parsed[0] == node.input[0] and node.input[0] in stored:
            out.setdefault(parsed[0], {})[node.output[0]] = node
    return out


def _readers(model: onnx.ModelProto, names: set[str]) -> list[tuple[onnx.NodeProto, int]]:
    return [(n, k) for n in model.graph.node for k, i in enumerate(n.input) if i in names]


def retie_uses(model: onnx.ModelProto, groups: Sequence[_Grouped]) -> bool:
    """Join the views of one parameter that coupling put in the same place; True if any changed.

    Two views are in the same place when every axis of both is in the same group with the same
    units (or in none): slicing them alike, they stay equal. Each set of such views becomes one
    tensor: the parameter itself when there is one set, else a view named after its uses.
    """

    where: dict[Space, tuple[int, bytes]] = {}
    for g in groups:
        for space in g.members:
            units = g.unit_of.get(space)  # absent where the size is unknown (a dynamic axis)
            # A space of unknown size cannot be shown to be sliced alike: it stays in a place of its own.
            where[space] = (g.id, np.asarray(units).tobytes() if units is not None else repr(space).encode())
    changed = False
    for source, views in _use_views(model).items():
        rank = len(next(t.dims for t in model.graph.initializer if t.name == source))
        sets: dict[tuple[object, ...], list[str]] = {}
        for name in views:
            sets.setdefault(tuple(where.get((name, a)) for a in range(rank)), []).append(name)
        for names in sets.values():
            if len(names) == 1 and len(sets) > 1:
                continue  # a use in a place of its own keeps its view
            uses = sorted(k for n in names for k in _use_indices(n))
            target = source if len(sets) == 1 else use_name(source, uses)
            for node, k in _readers(model, set(names)):
                node.input[k] = target
            for n in names:
                model.graph.node.remove(views[n])
            if target != source:
                model.graph.node.insert(0, onnx.helper.make_node("Identity", [source], [target], name=f"{target}__view"))
            changed = True
    return changed


def share_unsliced_uses(model: onnx.ModelProto) -> bool:
    """In a pruned model: uses whose view was not sliced (still an Identity of the parameter) read
    the parameter again, so an untouched shared tensor stays shared. True if anything changed."""
    changed = False
    for source, views in _use_views(model).items():
        for name, node in views.items():
            for reader, k in _readers(model, {name}):
                reader.input[k] = source
            model.graph.node.remove(node)
            changed = True
    return changed


def untie_for_plan(model: onnx.ModelProto, names: Iterable[str]) -> None:
    """Recreate, on a model as loaded, the views a plan names (``W__spa_use1_3``): each is an
    ``Identity`` of ``W`` that its uses read. Names that are already tensors are left alone."""

    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    wanted = [(n, p) for n in dict.fromkeys(names) if n not in taken and (p := parse_use_name(n)) is not None]
    if not wanted:
        return
    LiftConstantsPass()(model)  # the working copy was lifted before its uses were counted
    uses = parameter_uses(model)
    for name, (source, ks) in wanted:
        found = uses.get(source, [])
        if any(k >= len(found) for k in ks):
            continue  # not a use of this model: the plan check reports the unknown tensor
        for k in ks:
            node, i = found[k]
            node.input[i] = name
        model.graph.node.insert(0, onnx.helper.make_node("Identity", [source], [name], name=f"{name}__view"))


def _use_indices(name: str) -> list[int]:
    """The use numbers in a view name made by :func:`use_name` (every view of :func:`_use_views` is one)."""
    parsed = parse_use_name(name)
    assert parsed is not None, f"'{name}' is not a use view's name"
    return parsed[1]
