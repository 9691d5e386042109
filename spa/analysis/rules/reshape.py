"""Reshape and Flatten: one channel maps to a block (or a strided set) of features when axes merge,
and a merged axis splits back into channels when they part (heads)."""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.attention import couple_split
from spa.analysis.rules.base import Coupling, KeptMap, RewriteSink, Rule, norm_axis, position, register
from spa.analysis.rules.shape_vectors import couple_target, rewrite_target
from spa.analysis.rules.shuffle import couple_shuffle, find_shuffle, rewrite_shuffle
from spa.model.graph import ModelContext, Space, attr_int, node_label
from spa.model.shapes import segments

VAxis = tuple[Space, int]
"""An axis of a reshape segment and its size (for a folded ``B·H`` axis, ``H``)."""



def _virtual_axes(ctx: ModelContext, node: onnx.NodeProto, ii: list[int], jj: list[int]
                  ) -> tuple[list[VAxis], list[VAxis], list[Space]] | str:
    """The known axes of a segment on each side, with a dynamic leading axis that absorbs
    channels (``B·H``) turned into a folded axis of ``H``; plus dynamic axes paired one to one.

    Returns ``(ins, outs, paired)`` or a reason the segment cannot be followed.
    """
    x, y = node.input[0], node.output[0]
    sx, sy = ctx.shape(x), ctx.shape(y)
    assert sx is not None and sy is not None
    dyn_in = [i for i in ii if sx[i] is None]
    dyn_out = [j for j in jj if sy[j] is None]
    ins: list[VAxis] = [((x, i), d) for i in ii if (d := sx[i]) is not None and d != 1]
    outs: list[VAxis] = [((y, j), d) for j in jj if (d := sy[j]) is not None and d != 1]
    if not dyn_in and not dyn_out:
        return ins, outs, []
    if len(dyn_in) != 1 or len(dyn_out) != 1 or dyn_in[0] != ii[0] or dyn_out[0] != jj[0]:
        return "dynamic sizes in the middle of merged axes"
    p_in = int(np.prod([n for _, n in ins], dtype=np.int64))
    p_out = int(np.prod([n for _, n in outs], dtype=np.int64))
    if p_in == p_out:
        return ins, outs, [(x, dyn_in[0]), (y, dyn_out[0])]
    if p_in % p_out == 0:
        return ins, [((y, dyn_out[0]), p_in // p_out), *outs], []
    if p_out % p_in == 0:
        return [((x, dyn_in[0]), p_out // p_in), *ins], outs, []
    return "a dynamic axis absorbs part of a channel axis"


def _merge_map(ctx: ModelContext, node: onnx.NodeProto, c: Coupling, space: Space, segs: list[tuple[list[int], list[int]]]) -> Coupling:
    """Couple ``space`` through a reshape described by ``segs``."""
    x = node.input[0]
    is_in = space[0] == x and position(node, space[0])[0] == "in"
    for ii, jj in segs:
        if space[1] not in (ii if is_in else jj):
            continue
        v = _virtual_axes(ctx, node, ii, jj)
        if isinstance(v, str):
            return c.block(space, f"{node_label(node)}: {v}")
        ins, outs, paired = v
        if space in paired:
            n = ctx.dim(*space)
            if n is None:
                return c.block(space, f"size of '{space[0]}' axis {space[1]} is unknown at {node_label(node)}")
            return c.same(space, paired[1 - paired.index(space)], n)
        for s, n in ins + outs:
            if ctx.dim(*s) is None:
                ctx.fold_dims[s] = n  # a dynamic axis that carries n channels (see ModelContext.fold_dims)
        mine = ins if is_in else outs
        if space not in [s for s, _ in mine]:
            return c.block(space, f"{node_label(node)} cannot map axis {space[1]} of '{space[0]}'")
        if len(ins) <= 1 and len(outs) <= 1:
            if ins and outs:
                c.same(ins[0][0], outs[0][0], ins[0][1])
            return c
        if len(outs) == 1 and is_in:
            # Several input axes merge into one output axis: channel -> (strided) feature set.
            digits = np.indices([n for _, n in ins]).reshape(len(ins), -1)[[s for s, _ in ins].index(space)]
            return c.link(space, outs[0][0], digits, np.arange(digits.size))
        if len(outs) == 1:
            # Asked from the merged output: which input axis holds the channels is known only
            # from the other side, so this is fine only if that side is in the same group.
            return c.block(
                space,
                f"{node_label(node)} merges axes {[s[1] for s, _ in ins]} of '{x}'; reached from its output only",
                unless=tuple(s for s, _ in ins),
            )
        if len(ins) == 1:
            return couple_split(ctx, node, c, space, ins[0], outs)
        if _regroups(space, ins, outs):
            return _link_outer(c, ins[0], outs[0])
        return c.block(space, f"{node_label(node)} reshapes axes {[s[1] for s, _ in ins]} of '{x}' "
                              f"into axes {[s[1] for s, _ in outs]}")
    return c.block(space, f"{node_label(node)} cannot map axis {space[1]} of '{space[0]}'")


def _regroups(space: Space, ins: list[VAxis], outs: list[VAxis]) -> bool:
    """Whether ``space`` is the outermost axis of a segment whose outermost axes on both sides
    nest: GroupNorm's ``(N, C, H, W) -> (N, G, C/G·H·W)`` and back, where output index ``g``
    holds exactly input channels ``g·C/G .. (g+1)·C/G - 1`` (row-major order)."""
    if space not in (ins[0][0], outs[0][0]):
        return False
    a, b = ins[0][1], outs[0][1]
    return min(a, b) >= 2 and max(a, b) % min(a, b) == 0 and not any(s == space for s, _ in ins[1:] + outs[1:])


def _link_outer(c: Coupling, a: VAxis, b: VAxis) -> Coupling:
    """Couple two nested outermost axes: index ``i`` of the larger is index ``i // f`` of the
    smaller, ``f`` the ratio of their sizes. A unit is then one whole index of the smaller axis
    (one normalisation group), so the statistics of the groups that stay are unchanged."""
    (big, nb), (small, ns) = (a, b) if a[1] >= b[1] else (b, a)
    r = np.arange(nb, dtype=np.int64)
    return c.link(big, small, r, r // (nb // ns))


def _sample_segments(ctx: ModelContext, x: str, y: str) -> list[tuple[list[int], list[int]]] | None:
    """Pair a Reshape's axes from the concrete shapes of the probe runs (dynamic sizes).

    The segments come from the larger run and must also hold, product for product, in the
    smaller one (where a batch of 1 could pair axes by coincidence)."""
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for t in (x, y):
        static = ctx.shape(t)
        known = None if static is None else tuple(d for d in static if d is not None)
        if t in ctx.sample_shapes:
            shapes.append(ctx.sample_shapes[t])
        elif static is not None and known is not None and len(known) == len(static):
            shapes.append((known, known))
        else:
            return None
    (in0, in1), (out0, out1) = shapes
    segs = segments(in1, out1)
    if segs is None:
        return None
    for ii, jj in segs:
        if int(np.prod([in0[i] for i in ii])) != int(np.prod([out0[j] for j in jj])):
            return None
    return segs


@register
class FlattenRule(Rule):
    """Flatten(axis=k): axes ``[0, k)`` merge into output axis 0, ``[k, r)`` into axis 1."""

    op_types = ("Flatten",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        sx = ctx.shape(node.input[0])
        if sx is None:
            return c.block(space, f"{node_label(node)} input shape unknown")
        k = norm_axis(attr_int(node, "axis", 1), len(sx))
        segs = [(list(range(0, k)), [0]), (list(range(k, len(sx))), [1])]
        if any(sx[i] is None for i in range(k, len(sx))):
            return c.block(space, f"{node_label(node)} flattened sizes unknown")
        return _merge_map(ctx, node, c, space, [s for s in segs if s[0]])


@register
class ReshapeRule(Rule):
    """Reshape between statically known shapes (a dynamic batch axis is fine).

    Merging axes maps one channel to a block of features; splitting a channel axis into several
    (attention heads) is refused here. The target shape is rewritten after pruning; refuses when
    the target value for a pruned axis is computed at run time.
    """

    op_types = ("Reshape",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        if position(node, space[0]) == ("in", 1):
            return c.block(space, f"{node_label(node)} shape input is not data")

        shuffle = find_shuffle(ctx, node)
        if shuffle is not None:
            return couple_shuffle(ctx, node, shuffle, space)
        sx, sy = ctx.shape(x), ctx.shape(y)
        if sx is None or sy is None:
            return c.block(space, f"{node_label(node)} input or output shape unknown")
        segs = segments(sx, sy) if None not in sx[1:] and None not in sy[1:] else None
        if segs is None:
            segs = _sample_segments(ctx, x, y) or segments(sx, sy)
        if segs is None:
            return c.block(space, f"{node_label(node)} shapes {sx} -> {sy} cannot be paired")
        c = _merge_map(ctx, node, c, space, segs)
        for b in {e.b[1] if e.b[0] == y else e.a[1] for e in c.edges}:
            couple_target(ctx, c, node, b, keep_values=(0, -1))
        return c

    def rewrite_constants(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap, out: RewriteSink) -> bool:
        shuffle = find_shuffle(ctx, node)
        if shuffle is not None:
            return rewrite_shuffle(ctx, shuffle, node, kept, out)
        return rewrite_target(node, ctx, kept, out, keep_values=(0, -1))
