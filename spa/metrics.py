"""Static cost of a model: parameters and multiply-accumulates (MACs).

MACs count the multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul at batch size 1
(symbolic dims count as 1); element-wise ops, pooling and normalisations are not counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx

from spa.graph import FLOAT_TYPES, ModelContext, attr

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


def node_macs(node: onnx.NodeProto, ctx: ModelContext) -> int:
    """MACs of one node (0 for ops not counted or shapes unknown)."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w = ctx.shape(node.input[1])
        if w is None or any(d is None for d in w):
            return 0
        kernel = int(np.prod(w[2:], dtype=np.int64))
        if op == "Conv":
            out = _prod(ctx.shape(node.output[0]))
            return 0 if out is None else out * int(w[1]) * kernel  # type: ignore[arg-type]
        # ConvTranspose weight (C, M/group, k...): every input element feeds M/group outputs.
        inp = _prod(ctx.shape(node.input[0]))
        return 0 if inp is None else inp * int(w[1]) * kernel  # type: ignore[arg-type]
    if op in ("Gemm", "MatMul"):
        out = _prod(ctx.shape(node.output[0]))
        a = ctx.shape(node.input[0])
        if out is None or a is None or not a:
            return 0
        if op == "Gemm" and int(attr(node, "transA", 0)):  # type: ignore[arg-type]
            k = a[0]
        else:
            k = a[-1]
        return 0 if k is None else out * int(k)
    return 0


def measure(ctx: ModelContext, with_size: bool = True) -> Cost:
    """Parameters (elements of float stored tensors), MACs, and serialized size (-1 when
    ``with_size`` is False)."""
    params = 0
    for name in [*ctx.initializers, *ctx.constant_nodes]:
        if ctx.dtypes.get(name) in FLOAT_TYPES:
            params += _prod(ctx.shape(name)) or 0
    macs = sum(node_macs(n, ctx) for n in ctx.model.graph.node)
    return Cost(params=params, macs=macs, size_bytes=serialized_size(ctx.model) if with_size else -1)


def serialized_size(model: onnx.ModelProto) -> int:
    """Bytes of the serialized model, weights included (external data counted as stored).

    Computed as the weightless graph's size plus each large tensor's payload, which avoids
    encoding hundreds of megabytes of weights just to count them (exact to a few bytes per
    tensor).
    """
    from spa.shapes import weightless

    payload = 0
    for t in model.graph.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) > 1024:
            payload += _tensor_bytes(t)
    return weightless(model).ByteSize() + payload


#: Bytes per element of types whose raw data is exactly elements x size (not packed 4-bit ones).
_RAW_ITEMSIZE = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.FLOAT16: 2,
                 onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4,
                 onnx.TensorProto.INT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
                 onnx.TensorProto.BOOL: 1}


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.HasField("raw_data"):
        itemsize = _RAW_ITEMSIZE.get(t.data_type)
        # Reading raw_data to take its length would copy the tensor's bytes.
        return int(np.prod(t.dims, dtype=np.int64)) * itemsize if itemsize else len(t.raw_data)
    for loc in t.external_data:
        if loc.key == "length":
            return int(loc.value)
    n = int(np.prod(t.dims, dtype=np.int64))
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if t.data_type else 0
