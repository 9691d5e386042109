"""onnxruntime contrib ops: the fused ``com.microsoft`` nodes of optimised transformer graphs.

``onnxruntime.transformers.optimizer`` rewrites transformer blocks into fused ops. Those with a
rule here:

- ``BiasGelu``, ``FastGelu``, ``Gelu``, ``QuickGelu``: element-wise, the bias (if any) is sliced
  with the last axis. An MLP's inner dimension runs through them from one MatMul to the next.
- ``SkipLayerNormalization`` / ``SkipSimplifiedLayerNormalization`` and ``EmbedLayerNormalization``:
  input, skip, outputs, gamma, beta, bias and the embedding tables
  share the hidden axis. The op normalises over that axis, so pruning it is approximate, exactly
  like ``LayerNormalization``: the group is blocked unless the user opts in with
  ``--prune-norm-axes``, and it is always blocked where the op exposes its mean or inverse std.
- ``Attention``: ``input @ weights + bias`` with the packed weight ``[hidden_in, Q+K+V]``, split
  into ``num_heads`` heads. Its input axis is consumed like a MatMul's. Heads follow the head
  granularity (``ModelContext.head_mode``). With ``whole``, one unit is one head: its Q, K and V
  columns, bias entries and output channels. ``num_heads`` (and ``qkv_hidden_sizes``) are then
  rewritten. With ``dims``, one unit is dimension ``d`` of every head (Q and K together, V apart).
  ``qkv_hidden_sizes`` is then rewritten and ``scale`` is pinned to the original
  ``1/sqrt(head_size)``. Refused (blocked): a KV cache (``past``/``present``), an
  ``attention_bias`` input (it has a head axis), and a non-constant weight.
- ``MultiHeadAttention`` with separate 3-D query, key and value (projections done by MatMuls
  outside): heads as for ``Attention``. Refused: packed or 4-D (BNSH) key/value, KV caches,
  ``attention_bias``, the ``qk`` output.
- ``RotaryEmbedding``: whole heads of a 3-D ``[B, S, N·h]`` input or the head axis of a 4-D
  ``[B, N, S, h]`` one. Refused: the head width (it rotates pairs inside a head).
- ``FusedMatMul`` with a constant 2-D weight and no batch transposes: like ``MatMul``.

Ops with a known reason to refuse are registered in :data:`REFUSED`, so their groups are
blocked with that reason. Other contrib ops have no rule, and their groups are blocked as
"no coupling rule". onnxruntime's ``SimplifiedLayerNormalization`` (RMSNorm) sits in the default
domain, where ``onnx.checker`` rejects it, so no model holding it can pass SPA's checks.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import numpy as np
import onnx

from spa.analysis.rules.base import Coupling, KeptMap, Rule, register, tie
from spa.model.graph import ModelContext, Space, attr_float, attr_int, attr_ints, node_label

MS = "com.microsoft"


def _opt(seq: Sequence[str], i: int) -> str | None:
    """Input or output ``i`` of a node when present and not empty."""
    items = list(seq)
    return items[i] if len(items) > i and items[i] else None


def _present(tensors: list[str | None]) -> list[str]:
    return [t for t in tensors if t]


def _channels_last(ctx: ModelContext, node: onnx.NodeProto, space: Space, data: list[str], params: list[str],
                   normalises: bool = False, stats: tuple[str, ...] = ()) -> Coupling:
    """Couple an op whose tensors share a channel-last layout.

    The last axis of every ``data`` tensor and of every ``params`` vector is one set. Every other
    axis of the data tensors is aligned from the right, and size-1 (broadcast) axes are left out.
    When ``normalises``, the hidden set is marked inexact, and it is blocked if ``stats``
    (mean / inverse-std outputs) are produced.
    """
    c = Coupling()
    tensors = [*data, *params]
    ranks = {t: r for t in tensors if (r := ctx.rank(t))}  # unknown and 0 ranks left out
    if len(ranks) != len(set(tensors)):
        return c.block(space, f"rank unknown at {node_label(node)}")
    top = max(ranks[t] for t in data)
    hidden: list[Space] = [(t, ranks[t] - 1) for t in tensors]
    lead: list[list[Space]] = []
    for k in range(top - 1):
        members = []
        for t in data:
            a = k - (top - ranks[t])
            if a >= 0 and ctx.dim(t, a) != 1:
                members.append((t, a))
        lead.append(members)
    if normalises and space in hidden:
        if stats:
            return c.block(space, f"{node_label(node)} exposes its statistics ('{stats[0]}')")
        c.inexact.append(f"{node_label(node)} normalises over a pruned axis")
    tied = tie(ctx, node, space, [hidden, *lead])
    c.edges, c.blocks = tied.edges, [*c.blocks, *tied.blocks]
    return c


@register
class ContribGeluRule(Rule):
    """``BiasGelu(A, bias)``, ``FastGelu(X[, bias])``, ``Gelu(X)``, ``QuickGelu(X)``: element-wise;
    the bias broadcasts along the last axis and is sliced with it."""

    domain = MS
    op_types = ("BiasGelu", "FastGelu", "Gelu", "QuickGelu")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        return _channels_last(ctx, node, space, [node.input[0], node.output[0]], _present([_opt(node.input, 1)]))


@register
class SkipLayerNormRule(Rule):
    """``SkipLayerNormalization(input, skip, gamma[, beta][, bias])`` and
    ``SkipSimplifiedLayerNormalization(input, skip, gamma[, bias])``.

    Outputs: ``output``, ``mean``, ``inv_std_var`` and ``input_skip_bias_sum``. The op computes
    LayerNorm (RMSNorm for the simplified one) of ``input + skip + bias``. Everything shares the
    hidden axis, which the op normalises over (inexact, see the module docstring).
    """

    domain = MS
    op_types = ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        ins = node.input
        if node.op_type == "SkipLayerNormalization":
            params = _present([_opt(ins, 2), _opt(ins, 3), _opt(ins, 4)])
        else:
            params = _present([_opt(ins, 2), _opt(ins, 3)])
        data = _present([ins[0], ins[1], node.output[0], _opt(node.output, 3)])
        stats = tuple(_present([_opt(node.output, 1), _opt(node.output, 2)]))
        return _channels_last(ctx, node, space, data, params, normalises=True, stats=stats)


@register
class EmbedLayerNormRule(Rule):
    """``EmbedLayerNormalization``: LayerNorm of the sum of word, position and segment embeddings.

    The hidden axis couples the output, ``embedding_sum``, axis 1 of every embedding table, gamma
    and beta (inexact: the op normalises over it). The ``mask_index`` output has no hidden axis.
    """

    domain = MS
    op_types = ("EmbedLayerNormalization",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        ins = node.input
        tables = _present([_opt(ins, 2), _opt(ins, 3), _opt(ins, 4)])  # (vocab or positions, hidden)
        if not all(ctx.is_constant(t) for t in tables):
            return Coupling().block(space, f"{node_label(node)} has an embedding table that is not a constant")
        data = _present([node.output[0], _opt(node.output, 2)])
        params = [*tables, *_present([_opt(ins, 5), _opt(ins, 6)])]
        return _channels_last(ctx, node, space, data, params, normalises=True)


_ORIGINAL: dict[int, tuple[weakref.ref[ModelContext], dict[str, onnx.NodeProto]]] = {}


def _original(ctx: ModelContext, node: onnx.NodeProto) -> onnx.NodeProto:
    """A copy of ``node`` as it was when first read in ``ctx``, before any rewrite.

    ``update_attributes`` rewrites ``num_heads``, ``qkv_hidden_sizes`` and ``scale`` in place, and
    the attribute pass runs until nothing changes, so later calls must not read the new values.
    The first reading per context is kept.
    """
    entry = _ORIGINAL.get(id(ctx))
    if entry is None or entry[0]() is not ctx:
        for key in [k for k, (ref, _) in _ORIGINAL.items() if ref() is None]:
            del _ORIGINAL[key]
        entry = (weakref.ref(ctx), {})
        _ORIGINAL[id(ctx)] = entry
    copy = entry[1].get(node.name)
    if copy is None:
        copy = entry[1][node.name] = onnx.NodeProto()
        copy.CopyFrom(node)
    return copy


def _heads(ctx: ModelContext, node: onnx.NodeProto) -> int:
    """The original ``num_heads`` (see :func:`_original`)."""
    return attr_int(_original(ctx, node), "num_heads", 0)


def _head_mode(ctx: ModelContext) -> str:
    return str(getattr(ctx, "head_mode", "whole"))


def _head_links(c: Coupling, mode: str, blocks: list[tuple[Space, int, int]], anchor: tuple[Space, int, int],
                heads: int) -> None:
    """Tie head-structured index ranges together.

    ``blocks`` holds ``(space, offset, head_width)`` triples. Head ``h`` of a block occupies
    ``offset + h·width + [0, width)``. ``anchor`` is the block that every unit is named after
    (the value/output side). ``whole``: every index of head ``h`` joins the anchor's index
    ``h·width``. ``dims``: index ``d`` of head ``h`` joins index ``d`` of head 0 of its own block
    (callers tie Q's and K's ``d`` together themselves).
    """
    a_space, a_off, a_width = anchor
    for space, off, width in blocks:
        h = np.repeat(np.arange(heads), width)
        d = np.tile(np.arange(width), heads)
        idx = off + h * width + d
        if mode == "whole":
            c.link(space, a_space, idx, a_off + h * a_width)
        else:
            c.link(space, space, idx, off + d)


@register
class AttentionRule(Rule):
    """``Attention(input, weights, bias, mask_index, past, attention_bias, past_sequence_length)``:
    fused QKV projection + multi-head attention (see the module docstring)."""

    domain = MS
    op_types = ("Attention",)

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        return [(node.output[0], 2)]

    @staticmethod
    def _sizes(node: onnx.NodeProto, ctx: ModelContext) -> tuple[int, int, int, int] | None:
        """``(num_heads, q, k, v)`` hidden sizes, or None when the weight shape is unknown."""
        heads = _heads(ctx, node)
        qkv = attr_ints(_original(ctx, node), "qkv_hidden_sizes")
        if qkv:
            q, k, v = qkv
        else:
            total = ctx.dim(node.input[1], 1)
            if total is None:
                return None
            q = k = v = total // 3
        return heads, q, k, v

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, w, y = node.input[0], node.input[1], node.output[0]
        b = _opt(node.input, 2)
        if space in ((x, 2), (w, 0)):
            if not ctx.is_constant(w):
                return c.block(space, f"{node_label(node)} weight '{w}' is not a constant")
            return tie(ctx, node, space, [[(x, 2), (w, 0)]])
        if space in ((x, 0), (y, 0), (x, 1), (y, 1)):
            return tie(ctx, node, space, [[(x, 0), (y, 0)], [(x, 1), (y, 1)]])
        head_spaces = [(w, 1), (y, 2)] + ([(b, 0)] if b else [])
        if space not in head_spaces:
            return c.block(space, f"{node_label(node)} cannot prune axis {space[1]} of '{space[0]}'")
        reason = self._refusal(node, ctx)
        sizes = self._sizes(node, ctx)
        if reason is not None:
            return c.block(space, reason)
        if sizes is None:
            return c.block(space, f"shape of '{w}' is unknown at {node_label(node)}")
        heads, q, k, v = sizes
        hq, hk, hv = q // heads, k // heads, v // heads
        if b:
            c.same((w, 1), (b, 0), q + k + v)
        c.link((y, 2), (w, 1), np.arange(v), q + k + np.arange(v))
        _head_links(c, _head_mode(ctx), [((w, 1), 0, hq), ((w, 1), q, hk), ((w, 1), q + k, hv)],
                    ((w, 1), q + k, hv), heads)
        if _head_mode(ctx) == "dims":  # Q and K share the score sum: dimension d of both is one unit
            c.link((w, 1), (w, 1), q + np.arange(hk), np.arange(hk))
        return c

    def _refusal(self, node: onnx.NodeProto, ctx: ModelContext) -> str | None:
        mode = _head_mode(ctx)
        label = node_label(node)
        heads = _heads(ctx, node)
        if mode not in ("whole", "dims"):
            return f"{label}: attention heads are left alone (head granularity '{mode}')"
        if not ctx.is_constant(node.input[1]):
            return f"{label} weight '{node.input[1]}' is not a constant"
        if _opt(node.input, 4) or _opt(node.output, 1):
            return f"{label} has a KV cache (past/present), whose head axis SPA does not slice"
        if _opt(node.input, 5):
            return f"{label} has an attention_bias input '{node.input[5]}' with a head axis"
        sizes = self._sizes(node, ctx)
        if heads <= 0 or sizes is None or any(s % heads for s in sizes[1:]) or sizes[1] != sizes[2]:
            return f"{label}: hidden sizes {sizes and sizes[1:]} do not split into num_heads={heads} heads"
        if mode == "dims" and attr_int(node, "do_rotary", 0):
            return f"{label} applies rotary embeddings, which pair dimensions inside a head"
        return None

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        """Rewrite ``num_heads`` and ``qkv_hidden_sizes``, and pin ``scale`` when the head width changes."""
        w = node.input[1]
        sizes = self._sizes(node, ctx)
        if (w, 1) not in kept or sizes is None:
            return False
        heads, q, k, v = sizes
        cols = np.asarray(kept[(w, 1)])
        nq, nk, nv = (int(np.count_nonzero((cols >= lo) & (cols < hi))) for lo, hi in ((0, q), (q, q + k), (q + k, q + k + v)))
        hv = v // heads
        new_heads = len(np.unique((cols[cols >= q + k] - q - k) // hv))
        new_heads = new_heads if nv == new_heads * hv else heads  # whole heads removed, or dimensions
        changed = _set_attr(node, "num_heads", int(new_heads))
        if attr_ints(_original(ctx, node), "qkv_hidden_sizes") is not None or len({nq, nk, nv}) > 1:
            changed |= _set_attr(node, "qkv_hidden_sizes", [int(nq), int(nk), int(nv)])
        if nq // new_heads != q // heads and not attr_float(_original(ctx, node), "scale", 0.0):
            changed |= _set_attr(node, "scale", 1.0 / math.sqrt(q // heads))
        return changed


@register
class MultiHeadAttentionRule(Rule):
    """``MultiHeadAttention(query, key, value[, bias], ...)`` with separate 3-D Q, K, V.

    Projections are done outside (by MatMuls, whose groups the heads join). Heads as for
    ``Attention``. ``num_heads`` is rewritten, and ``scale`` is pinned when the head width changes.
    """

    domain = MS
    op_types = ("MultiHeadAttention",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        q, k, v, y = node.input[0], _opt(node.input, 1), _opt(node.input, 2), node.output[0]
        b = _opt(node.input, 3)
        label = node_label(node)
        if k is None or v is None or any(ctx.rank(t) != 3 for t in (q, k, v)):
            return c.block(space, f"{label}: only separate 3-D query, key and value are supported (packed or BNSH inputs)")
        lead = [[(q, 0), (k, 0), (v, 0), (y, 0)], [(q, 1), (y, 1)], [(k, 1), (v, 1)]]
        if any(space in s for s in lead):
            return tie(ctx, node, space, lead)
        head_spaces = [(q, 2), (k, 2), (v, 2), (y, 2)] + ([(b, 0)] if b else [])
        if space not in head_spaces:
            return c.block(space, f"{label} cannot prune axis {space[1]} of '{space[0]}'")
        heads = _heads(ctx, node)
        dq, dk, dv = ctx.dim(q, 2), ctx.dim(k, 2), ctx.dim(v, 2)
        mode = _head_mode(ctx)
        if mode not in ("whole", "dims"):
            return c.block(space, f"{label}: attention heads are left alone (head granularity '{mode}')")
        if any(_opt(node.input, i) for i in (5, 6, 7)) or any(_opt(node.output, i) for i in (1, 2, 3)):
            return c.block(space, f"{label} has a KV cache, an attention_bias or a qk output, each with a head axis")
        if dq is None or dk is None or dv is None or heads <= 0 or dq != dk or any(d % heads for d in (dq, dk, dv)):
            return c.block(space, f"{label}: hidden sizes {(dq, dk, dv)} do not split into num_heads={heads} heads")
        hq, hv = dq // heads, dv // heads
        c.same((v, 2), (y, 2), dv)
        c.same((q, 2), (k, 2), dq)  # dimension d of head h: Q and K together
        if b:
            c.link((b, 0), (q, 2), np.arange(dq), np.arange(dq))
            c.link((b, 0), (k, 2), dq + np.arange(dk), np.arange(dk))
            c.link((b, 0), (v, 2), dq + dk + np.arange(dv), np.arange(dv))
        _head_links(c, mode, [((q, 2), 0, hq), ((v, 2), 0, hv)], ((v, 2), 0, hv), heads)
        return c

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        q, v = node.input[0], _opt(node.input, 2)
        heads = _heads(ctx, node)
        if v is None or (v, 2) not in kept or heads <= 0:
            return False
        dq, dv = ctx.dim(q, 2), ctx.dim(v, 2)
        if dq is None or dv is None:
            return False
        hv = dv // heads
        vk = np.asarray(kept[(v, 2)])
        new_heads = len(np.unique(vk // hv))
        new_heads = new_heads if len(vk) == new_heads * hv else heads
        nq = len(kept.get((q, 2), np.arange(dq)))
        changed = _set_attr(node, "num_heads", int(new_heads))
        if nq // new_heads != dq // heads and not attr_float(_original(ctx, node), "scale", 0.0):
            changed |= _set_attr(node, "scale", 1.0 / math.sqrt(dq // heads))
        return changed


@register
class RotaryEmbeddingRule(Rule):
    """``RotaryEmbedding(input, position_ids, cos_cache, sin_cache)``: whole heads only.

    3-D input ``[B, S, N·h]``: a unit is one head (``h`` channels), and ``num_heads`` is rewritten
    when set. 4-D input ``[B, N, S, h]``: the head axis passes through. The head width is refused
    in both layouts, because rotation mixes pairs of dimensions inside a head.
    """

    domain = MS
    op_types = ("RotaryEmbedding",)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, y = node.input[0], node.output[0]
        label = node_label(node)
        rank = ctx.rank(x)
        if space[0] not in (x, y) or rank not in (3, 4):
            return c.block(space, f"{label} cannot prune axis {space[1]} of '{space[0]}'")
        if space[1] < rank - 1:
            return tie(ctx, node, space, [[(x, a), (y, a)] for a in range(rank - 1)])
        if rank == 4:
            return c.block(space, f"{label} rotates pairs of dimensions inside a head (axis 3 of '{x}')")
        mode = _head_mode(ctx)
        width = self._head_width(node, ctx)
        n = ctx.dim(x, 2)
        if mode != "whole" or width is None or n is None or n % width:
            return c.block(space, f"{label} rotates pairs of dimensions inside a head: only whole heads "
                                  f"(head granularity 'whole') can go (head width {width})")
        c.same((x, 2), (y, 2), n)
        _head_links(c, "whole", [((x, 2), 0, width)], ((x, 2), 0, width), n // width)
        return c

    @staticmethod
    def _head_width(node: onnx.NodeProto, ctx: ModelContext) -> int | None:
        heads = _heads(ctx, node)
        n = ctx.dim(node.input[0], 2)
        if heads > 0:
            return None if n is None else n // heads
        cos = ctx.dim(node.input[2], 1) if len(node.input) > 2 else None
        return None if cos is None else 2 * cos

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        x = node.input[0]
        if _heads(ctx, node) <= 0 or (x, 2) not in kept:
            return False
        width = self._head_width(node, ctx)
        return False if not width else _set_attr(node, "num_heads", len(kept[(x, 2)]) // width)


@register
class FusedMatMulRule(Rule):
    """``FusedMatMul(A, B)`` = ``alpha · A' @ B'`` with a constant 2-D ``B``. Refuses ``transA``
    and the batch transposes (``transBatchA``/``transBatchB``)."""

    domain = MS
    op_types = ("FusedMatMul",)

    def _refusal(self, node: onnx.NodeProto, ctx: ModelContext) -> str | None:
        b = node.input[1]
        if not ctx.is_constant(b) or ctx.rank(b) != 2:
            return f"{node_label(node)} has no constant 2-D weight (input '{b}')"
        if any(attr_int(node, a, 0) for a in ("transA", "transBatchA", "transBatchB")):
            return f"{node_label(node)} transposes its activation input (transA/transBatch*)"
        return None

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        ry = ctx.rank(node.output[0])
        return [] if self._refusal(node, ctx) or ry is None else [(node.output[0], ry - 1)]

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        reason = self._refusal(node, ctx)
        if reason:
            return Coupling().block(space, reason)
        a, b, y = node.input[0], node.input[1], node.output[0]
        ra, ry = ctx.rank(a), ctx.rank(y)
        if ra is None or ry is None or ra < 2:
            return Coupling().block(space, f"{node_label(node)} input rank unknown or < 2")
        tb = attr_int(node, "transB", 0)
        sets: list[list[Space]] = [[(a, ra - 1), (b, 1 if tb else 0)], [(y, ry - 1), (b, 0 if tb else 1)]]
        sets += [[(a, i), (y, i + ry - ra)] for i in range(ra - 1)]
        return tie(ctx, node, space, sets)


#: Contrib ops SPA refuses on purpose, and why (blocked with this reason rather than "no rule").
REFUSED: dict[str, str] = {
    "GroupQueryAttention": "its query and KV head counts (num_heads, kv_num_heads) and KV-cache inputs and "
                           "outputs would all need rewriting",
    "PackedAttention": "it packs tokens of the whole batch, with a packed QKV weight",
    "PackedMultiHeadAttention": "it packs tokens of the whole batch",
    "DecoderMaskedMultiHeadAttention": "it reads and writes a KV cache with a head axis",
    "DecoderMaskedSelfAttention": "it reads and writes a KV cache with a head axis",
    "SparseAttention": "its block-sparse layout is per head and its KV cache has a head axis",
    "QAttention": "its weight is quantised",
    "QEmbedLayerNormalization": "its tables are quantised",
    "MatMulNBits": "its weight is packed n-bit blocks, which cannot be sliced by channel",
    "MatMulBnb4": "its weight is packed 4-bit blocks",
    "GatherBlockQuantized": "its table is packed quantised blocks",
    "DynamicQuantizeMatMul": "its weight is quantised",
    "MatMulIntegerToFloat": "its weight is quantised",
}


@register
class RefusedContribRule(Rule):
    """Blocks every group reaching one of :data:`REFUSED`, with the op's reason."""

    domain = MS
    op_types = tuple(REFUSED)

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        return Coupling().block(space, f"{node_label(node)} (com.microsoft) is not pruned: {REFUSED[node.op_type]}")


def _set_attr(node: onnx.NodeProto, name: str, value: int | float | list[int]) -> bool:
    """Set attribute ``name`` of ``node`` to ``value`` (typed as make_attribute types it); False
    when it already held that value."""
    for a in node.attribute:
        if a.name == name:
            if onnx.helper.get_attribute_value(a) == value:
                return False
            a.CopyFrom(onnx.helper.make_attribute(name, value))
            return True
    node.attribute.append(onnx.helper.make_attribute(name, value))
    return True
    node.attribute.append(onnx.helper.make_attribute(name, float(value)))
    return True
