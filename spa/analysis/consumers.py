"""Consumers: the linear layers that *read* a group's channels, seen as ``y = W x + b``.

For OBS every consumer is a matrix ``W`` (outputs x columns) acting on an input vector ``x``:
a Conv's unfolded patch (an input channel is a block of kernel-tap columns), a Gemm's or a
MatMul's input features. Each column belongs to one unit of the group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from spa.analysis.groups import Group
from spa.model.graph import ModelContext, attr_int, attr_ints, known


@dataclass
class Consumer:
    node: onnx.NodeProto
    kind: str  # "conv", "gemm", "matmul" (B is W) or "matmul_t" (B is Transpose(W))
    weight: str  # initializer holding W
    bias: str | None  # the node's bias input (an initializer, or a folded constant), if any
    x: str  # the input activation
    col_unit: np.ndarray  # unit id of every column of the 2-D weight
    cols: int
    own_bias: bool = False  # the bias is an initializer only this node reads: update it in place

    # ---- the weight as a matrix --------------------------------------------------------
    def matrix(self, ctx: ModelContext) -> np.ndarray:
        """``W`` as (outputs, columns) float64."""
        value = ctx.constant_value(self.weight)  # an initializer, or a folded constant
        if value is None:
            raise ValueError(f"weight '{self.weight}' is not a constant")
        w = np.asarray(value, dtype=np.float64)
        if self.kind == "conv":
            return w.reshape(w.shape[0], -1)
        if self.kind == "gemm":
            return w if attr_int(self.node, "transB", 0) else w.T
        if self.kind == "matmul_t":
            return w  # B = Transpose(W) with W (N, K)
        return w.T  # MatMul: B is (K, N)

    def to_weight(self, ctx: ModelContext, mat: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`matrix`, in the initializer's shape and dtype."""
        w = ctx.array(self.weight)
        if self.kind == "conv":
            out = mat.reshape(w.shape)
        elif self.kind == "gemm":
            out = mat if attr_int(self.node, "transB", 0) else mat.T
        elif self.kind == "matmul_t":
            out = mat
        else:
            out = mat.T
        return np.ascontiguousarray(out, dtype=w.dtype)

    def bias_vector(self, ctx: ModelContext) -> np.ndarray:
        m = self.matrix_rows(ctx)
        value = None if self.bias is None else ctx.constant_value(self.bias)
        if value is None:
            return np.zeros(m)
        return np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (m,)).copy()

    def matrix_rows(self, ctx: ModelContext) -> int:
        """The weight's size along its output-unit axis (axis 0 of a Conv weight, of a
        transposed Gemm or MatMul weight; axis 1 otherwise)."""
        shape = ctx.shape(self.weight)
        assert shape is not None
        if self.kind == "gemm":
            axis = 0 if attr_int(self.node, "transB", 0) else 1
        else:
            axis = 0 if self.kind in ("conv", "matmul_t") else 1
        rows = shape[axis]
        assert rows is not None, "a consumer's weight is stored: its shape is static"
        return int(rows)


def find_consumers(group: Group, ctx: ModelContext) -> list[Consumer]:
    """The Conv (group 1), Gemm and MatMul nodes whose weight input axis is in ``group``.

    A weight read by more than one node (readers of its shape aside), or a bias computed from
    non-constant inputs, makes a node unusable as a consumer (it is then left to the magnitude
    fallback).
    """
    out: list[Consumer] = []
    for t, a in group.params(ctx):
        # Readers of the weight's shape only (the dynamo exporter's zero bias) do not count.
        users = [n for n in ctx.consumers.get(t, ()) if n.op_type not in ("Shape", "Size")]
        if t not in ctx.initializers or len(users) != 1:
            continue
        node = users[0]
        c = _transposed_matmul(node, ctx, t, a, group) if node.op_type == "Transpose" else \
            _as_consumer(node, ctx, t, a, group)
        if c is not None:
            out.append(c)
    return out


def _transposed_matmul(tr: onnx.NodeProto, ctx: ModelContext, w: str, a: int, group: Group) -> Consumer | None:
    """``MatMul(x, Transpose(W))`` — how the TorchScript exporter writes a Linear on 3-D input."""
    perm = attr_ints(tr, "perm")
    users = ctx.consumers.get(tr.output[0], [])
    if a != 1 or ctx.rank(w) != 2 or (perm is not None and perm != [1, 0]) or len(users) != 1:
        return None
    mm = users[0]
    if mm.op_type != "MatMul" or mm.input[1] != tr.output[0]:
        return None
    units = group.unit_of[(w, a)]
    c = Consumer(mm, "matmul_t", w, None, mm.input[0], units, len(units))
    _attach_add_bias(c, ctx)
    return c


def _attach_add_bias(c: Consumer, ctx: ModelContext) -> None:
    """A MatMul's bias is the constant of the single Add that follows it, if there is one."""
    users = ctx.consumers.get(c.node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Add":
        return
    other = [i for i in users[0].input if i != c.node.output[0]]
    n = c.matrix_rows(ctx)
    if len(other) == 1 and other[0] in ctx.initializers and ctx.array(other[0]).size == n:
        c.bias = other[0]
        c.own_bias = len(ctx.consumers.get(other[0], ())) == 1


def _as_consumer(node: onnx.NodeProto, ctx: ModelContext, w: str, a: int, group: Group) -> Consumer | None:
    if len(node.input) < 2 or node.input[1] != w:
        return None
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and ctx.constant_value(bias) is None:
        return None
    shape = known(ctx.shape(w))  # w is an initializer: always known
    if shape is None:
        return None
    units = group.unit_of[(w, a)]
    c: Consumer | None = None
    if node.op_type == "Conv" and a == 1 and attr_int(node, "group", 1) == 1:
        taps = math.prod(shape[2:])
        c = Consumer(node, "conv", w, bias, node.input[0], np.repeat(units, taps), len(units) * taps)
    elif node.op_type == "Gemm" and not attr_int(node, "transA", 0):
        k_axis = 1 if attr_int(node, "transB", 0) else 0
        if a == k_axis:
            c = Consumer(node, "gemm", w, bias, node.input[0], units, len(units))
    elif node.op_type == "MatMul" and a == 0 and len(shape) == 2:
        c = Consumer(node, "matmul", w, None, node.input[0], units, len(units))
        _attach_add_bias(c, ctx)
        return c
    if c is not None and bias is not None:
        value = ctx.constant_value(bias)
        if (1 if value is None else value.size) not in (1, c.matrix_rows(ctx)):
            return None  # a bias that does not fit the layer (a malformed model): onnxruntime refuses it too
        c.own_bias = bias in ctx.initializers and len(ctx.consumers.get(bias, ())) == 1
    return c
