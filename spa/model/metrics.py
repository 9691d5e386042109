"""Static cost of a model: parameters and multiply-accumulates (MACs).

MACs count the multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul and Einsum at the input
sizes given to :func:`measure` (``spa prune`` gives the typical sizes of :mod:`spa.model.sizes`); without
them at batch size 1 (symbolic dims count as 1, except an axis 0 that the probe runs saw to be the batch times a fixed
number, such as Swin's batch·windows: ``ModelContext.batch_multiples``), and of onnxruntime's
fused ``com.microsoft`` ops that hide such
products: ``Attention`` (the packed QKV projection, the scores ``Q·Kᵀ`` and the context
``softmax·V``), ``MultiHeadAttention`` (scores and context; its projections are MatMuls outside)
and ``FusedMatMul``. Element-wise ops, softmax, pooling and normalisations are not counted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import onnx

from spa.model.einsum import parse
from spa.model.graph import FLOAT_TYPES, ModelContext, attr_int, attr_ints, attr_str, known
from spa.model.io import serialized_size
from spa.model.quant import float_view, is_quantization_parameter, is_quantized_weight, qop_of
from spa.model.runtime import random_inputs, run
from spa.model.shapes import ShapeProbe

log = logging.getLogger(__name__)


@dataclass
class Cost:
    params: int
    macs: int
    size_bytes: int


def _prod(dims: tuple[int | None, ...] | None) -> int | None:
    if dims is None:
        return None
    return int(np.prod([d if d is not None else 1 for d in dims], dtype=np.int64))


def _elements(ctx: ModelContext, name: str) -> int | None:
    """Elements of ``name`` at batch 1: a dynamic axis 0 that is the batch times a fixed number
    (Swin's windows, ``ctx.batch_multiples``) counts that number, other symbolic sizes count 1."""
    n = _prod(ctx.shape(name))
    return None if n is None else n * ctx.batch_multiples.get(name, 1)


def node_macs(node: onnx.NodeProto, ctx: ModelContext) -> int:
    """MACs of one node (0 for ops not counted or shapes unknown)."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w = ctx.shape(node.input[1]) if len(node.input) > 1 else None
        if w is None or len(w) < 3 or any(d is None for d in w):  # (M, C/g, k...); anything else is no Conv weight
            return 0
        dims = [_size(d) for d in w]  # all known (checked above)
        kernel = math.prod(dims[2:])
        if op == "Conv":
            out = _elements(ctx, node.output[0])
            return 0 if out is None else out * dims[1] * kernel
        # ConvTranspose weight (C, M/group, k...): every input element feeds M/group outputs.
        inp = _prod(ctx.shape(node.input[0]))
        return 0 if inp is None else inp * dims[1] * kernel
    if op in ("Gemm", "MatMul"):
        out = _elements(ctx, node.output[0])
        a = ctx.shape(node.input[0])
        if out is None or a is None or not a:
            return 0
        if op == "Gemm" and attr_int(node, "transA", 0):
            k = a[0]
        else:
            k = a[-1]
        return out * _size(k)  # a symbolic contraction (attention's softmax·V over the sequence) counts 1
    if op == "Einsum" and len(node.input) > 1:
        return _einsum_macs(node, ctx)
    if op in ("LSTM", "GRU", "RNN") and node.domain in ("", "ai.onnx"):
        return _recurrent_macs(node, ctx)
    q = qop_of(node)
    if q is not None and q.weight is not None:  # QLinearConv, QLinearMatMul, QGemm: as their float op
        return node_macs(float_view(node, q), ctx)
    if node.domain == "com.microsoft":
        return _contrib_macs(node, ctx)
    return 0


def _einsum_macs(node: onnx.NodeProto, ctx: ModelContext) -> int:
    """An Einsum of two or more operands multiplies once per combination of its labels' indices
    (a contraction ``bhid,bhjd->bhij`` costs ``b·h·i·j·d``); 0 when a rank is unknown."""

    shapes = [ctx.shape(i) for i in node.input]
    terms = parse(attr_str(node, "equation", ""), [None if s is None else len(s) for s in shapes])
    known_shapes = [s for s in shapes if s is not None]
    if terms is None or len(known_shapes) != len(shapes):
        return 0
    sizes: dict[str, int] = {}
    for labels, shape in zip(terms[0], known_shapes):
        for label, d in zip(labels, shape):
            sizes[label] = max(sizes.get(label, 1), _size(d))
    batch = ctx.batch_multiples.get(node.output[0], 1)  # the output's axis 0 holds that label
    return int(np.prod(list(sizes.values()), dtype=np.int64)) * batch


def _recurrent_macs(node: onnx.NodeProto, ctx: ModelContext) -> int:
    """LSTM/GRU/RNN: each step of each direction multiplies the input by ``W`` and the state by
    ``R``: ``steps · batch · dirs · gates·H · (features + H)`` (0 when the weights' shapes are unknown)."""
    w, r, x = known(ctx.shape(node.input[1])), known(ctx.shape(node.input[2])), ctx.shape(node.input[0])
    if w is None or r is None or x is None or len(x) != 3:
        return 0
    steps_batch = _size(x[0]) * _size(x[1]) * ctx.batch_multiples.get(node.input[0], 1)
    return steps_batch * w[0] * w[1] * (w[2] + r[2])


def _size(d: int | None) -> int:
    return 1 if d is None else int(d)


def _contrib_macs(node: onnx.NodeProto, ctx: ModelContext) -> int:
    """MACs of the fused com.microsoft ops that multiply matrices (0 when shapes are unknown)."""
    op = node.op_type
    if op == "FusedMatMul":
        out, a = _prod(ctx.shape(node.output[0])), ctx.shape(node.input[0])
        if out is None or not a or len(a) < 2:
            return 0
        return out * _size(a[-2] if attr_int(node, "transA", 0) else a[-1])
    if op == "Attention":
        return _attention_macs(node, ctx)
    if op == "MultiHeadAttention":
        return _mha_macs(node, ctx)
    return 0


def _input(node: onnx.NodeProto, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _attention_macs(node: onnx.NodeProto, ctx: ModelContext) -> int:
    """``Attention(input [B, S, Hin], weights [Hin, q+k+v], ..., past [2, B, N, P, h])``:
    ``B·S·Hin·(q+k+v)`` for the projection, ``B·S·L·q`` for the scores and ``B·S·L·v`` for the
    context, over ``L = P + S`` keys (every head attends over L positions with its width)."""
    x, w = ctx.shape(node.input[0]), ctx.shape(node.input[1])
    if x is None or w is None or len(x) != 3 or len(w) != 2 or w[1] is None:
        return 0
    sizes = attr_ints(node, "qkv_hidden_sizes")
    q, _, v = sizes if sizes else [int(w[1]) // 3] * 3
    b, s, hin = (_size(d) for d in x)
    past = ctx.shape(_input(node, 4) or "")
    keys = s + (_size(past[3]) if past is not None and len(past) == 5 else 0)
    return b * s * hin * int(w[1]) + b * s * keys * q + b * s * keys * v


def _mha_macs(node: onnx.NodeProto, ctx: ModelContext) -> int:
    """``MultiHeadAttention(query, key, value, ..., past_key [B, N, P, H])``: ``B·S·L·D`` for the
    scores and ``B·S·L·Dv`` for the context, with query ``[B, S, D]`` (or packed QKV
    ``[B, S, N, 3, H]``), key ``[B, L, D]``, ``[B, N, L, H]`` or packed KV ``[B, L, N, 2, H]``."""
    q = ctx.shape(node.input[0])
    k, v = ctx.shape(_input(node, 1) or ""), ctx.shape(_input(node, 2) or "")
    if q is None:
        return 0
    if len(q) == 5:  # packed QKV: keys are the queries
        b, s, n, _, h = (_size(d) for d in q)
        keys, d, dv = s, n * h, n * h
    elif len(q) == 3 and k is not None and len(k) == 5:  # packed KV
        b, s, d = (_size(x) for x in q)
        keys, dv = _size(k[1]), _size(k[2]) * _size(k[4])
    elif len(q) == 3 and k is not None and v is not None and len(k) in (3, 4) and len(v) == len(k):
        b, s, d = (_size(x) for x in q)
        keys = _size(k[1] if len(k) == 3 else k[2])
        dv = _size(v[2]) if len(v) == 3 else _size(v[1]) * _size(v[3])
    else:
        return 0
    past = ctx.shape(_input(node, 6) or "")
    keys += _size(past[2]) if past is not None and len(past) == 4 else 0
    return b * s * keys * d + b * s * keys * dv


def measure(ctx: ModelContext, with_size: bool = True, at: dict[str, list[int]] | None = None) -> Cost:
    """Parameters (elements of float stored tensors, and of the integer codes of QDQ weights, their
    scales and zero points left out), MACs, and serialized size (-1 when ``with_size`` is False).

    ``at`` (input name -> concrete shape, :attr:`spa.model.sizes.InputSizes.typical`) counts MACs at
    those input sizes: the counted ops' tensors with a dynamic size are read from one onnxruntime
    run of the model at them (weights fed as zeros). Without it, or when that run fails (with a
    warning), symbolic sizes count as described in the module docstring.
    """
    params = 0
    for name in [*ctx.initializers, *ctx.constant_nodes]:
        if is_quantization_parameter(ctx, name):
            continue  # a QDQ scale or zero point belongs to the weight it dequantizes
        if ctx.dtypes.get(name) in FLOAT_TYPES or is_quantized_weight(ctx, name):
            params += _prod(ctx.shape(name)) or 0
    concrete = _shapes_at(ctx, at) if at else {}
    saved = ctx.shapes, ctx.batch_multiples
    if concrete:  # the run's shapes replace the symbolic ones; its axis 0 is the real product already
        ctx.shapes, ctx.batch_multiples = {**ctx.shapes, **concrete}, {}
    try:
        macs = sum(node_macs(n, ctx) for n in ctx.model.graph.node)
    finally:
        ctx.shapes, ctx.batch_multiples = saved
    return Cost(params=params, macs=macs, size_bytes=serialized_size(ctx.model) if with_size else -1)


_COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")


def _shapes_at(ctx: ModelContext, at: dict[str, list[int]]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes, at input shapes ``at``, of the counted ops' tensors that have a dynamic size."""

    wanted = []
    for node in ctx.model.graph.node:
        if node.op_type in _COUNTED or node.domain == "com.microsoft":
            for t in [*node.input, *node.output]:
                s = ctx.shapes.get(t)
                if t and not ctx.is_constant(t) and (s is None or None in s):
                    wanted.append(t)
    if not wanted:
        return {}
    wanted = list(dict.fromkeys(wanted))
    try:
        got = run(ShapeProbe(ctx.model, wanted), random_inputs(ctx.model, seed=0, shapes=at))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
        log.warning("MACs counted at placeholder sizes: the model did not run at %s (%s)", at,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return {}
    return {t: tuple(int(d) for d in np.shape(v)) for t, v in got.items() if t in wanted}



#: Bytes per element of types whose raw data is exactly elements x size (not packed 4-bit ones).


