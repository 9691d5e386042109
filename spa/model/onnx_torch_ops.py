"""The op table of :mod:`spa.model.onnx_torch`: one torch function per ONNX op type (default domain).

Each entry is ``fn(inputs, attrs, node) -> output | list of outputs``. ``inputs`` holds torch
tensors (``None`` for an omitted optional input; a list for a sequence), ``attrs`` the node's
attributes as Python values, and ``node`` the op type, node name and the model's opset. Every
function computes what the ONNX operator specification says, in inference form: BatchNorm
uses its running statistics, Dropout is the identity. Every function is differentiable where
the operator is (twice, for the Hessian-vector products of the gradient criteria).

What is refused, with an :class:`~spa.errors.UnsupportedModelError` naming the op and the
attribute: ops not in :data:`OPS`, sub-graphs (If, Loop, Scan), training-mode BatchNorm,
MaxPool's indices output, Resize modes other than nearest (asymmetric, floor), linear and cubic
(half-pixel or align-corners), and anti-aliasing. This module imports torch; import it lazily.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from spa.errors import UnsupportedModelError

Attrs = dict[str, Any]


@dataclass(frozen=True)
class NodeInfo:
    """What an op function may need to know besides its inputs and attributes."""

    op_type: str
    name: str
    opset: int
    outputs: int = 1  # how many outputs the node names (Split without sizes divides by it)

    def refuse(self, what: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"cannot convert {self.op_type} '{self.name}' to torch: {what}")


OpFn = Callable[[list[Any], Attrs, NodeInfo], Any]
OPS: dict[str, OpFn] = {}


def op(*names: str) -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        for n in names:
            OPS[n] = fn
        return fn

    return register


# ---- helpers -----------------------------------------------------------------------------------

_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool,
}


def torch_dtype(onnx_type: int) -> torch.dtype:
    try:
        return _DTYPES[onnx_type]
    except KeyError:
        name = onnx.TensorProto.DataType.Name(onnx_type)
        raise UnsupportedModelError(f"cannot convert to torch: tensor type {name} has no torch equivalent") from None


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """A torch tensor that owns a copy of ``array``."""
    return torch.from_numpy(np.array(array, copy=True))


def ints(t: Any) -> list[int]:
    """A shape/index tensor (or list) as Python ints."""
    if isinstance(t, torch.Tensor):
        return [int(v) for v in t.reshape(-1).tolist()]
    return [int(v) for v in t]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _attr_or_input(attrs: Attrs, key: str, inputs: list[Any], index: int) -> list[int] | None:
    """An int list given as an attribute (older opsets) or as an optional input (newer)."""
    if key in attrs:
        return [int(v) for v in attrs[key]]
    if len(inputs) > index and inputs[index] is not None:
        return ints(inputs[index])
    return None


def _torch_pads(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX ``[b0, b1, .., e0, e1, ..]`` (leading axes first) as F.pad's last-axis-first pairs."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [int(b), int(e)]
    return out


def _spatial_pads(attrs: Attrs, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int], info: NodeInfo) -> tuple[list[int], list[int]]:
    """Begin and end pads of a Conv/pool, resolving ``auto_pad``."""
    nd = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = [int(p) for p in attrs.get("pads", [0] * 2 * nd)]
        return pads[:nd], pads[nd:]
    if auto == "VALID":
        return [0] * nd, [0] * nd
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise info.refuse(f"auto_pad '{auto}'")
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin, end


# ---- element-wise ------------------------------------------------------------------------------

_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Sqrt": torch.sqrt, "Abs": torch.abs, "Neg": torch.neg, "Erf": torch.erf, "Reciprocal": torch.reciprocal,
    "Floor": torch.floor, "Ceil": torch.ceil, "Sign": torch.sign, "Sin": torch.sin, "Cos": torch.cos,
    "Tan": torch.tan, "Atan": torch.atan, "Softsign": F.softsign, "Mish": F.mish, "Not": torch.logical_not,
    "Round": torch.round, "IsNaN": torch.isnan, "Softplus": lambda x: torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0),
}
for _name, _fn in _UNARY.items():
    OPS[_name] = functools.partial(lambda ins, a, n, f: f(ins[0]), f=_fn)

_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Equal": torch.eq, "Greater": torch.gt,
    "Less": torch.lt, "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le, "And": torch.logical_and,
    "Or": torch.logical_or, "Xor": torch.logical_xor,
}
for _name, _binary in _BINARY.items():
    OPS[_name] = functools.partial(lambda ins, a, n, f: f(ins[0], ins[1]), f=_binary)


@op("Div")
def _div(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, y = ins
    if x.is_floating_point():
        return x / y
    return torch.div(x, y, rounding_mode="trunc")  # integer Div truncates (C semantics)


@op("Pow")
def _pow(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return torch.pow(ins[0], ins[1]).to(ins[0].dtype)  # the result has the base's type


@op("Mod")
def _mod(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return torch.fmod(ins[0], ins[1]) if a.get("fmod", 0) else torch.remainder(ins[0], ins[1])


@op("Sum", "Mean", "Max", "Min")
def _variadic(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    fns: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "Sum": torch.add, "Mean": torch.add, "Max": torch.maximum, "Min": torch.minimum}
    fn = fns[n.op_type]
    out = functools.reduce(fn, ins)
    return out / len(ins) if n.op_type == "Mean" else out


@op("Where")
def _where(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return torch.where(ins[0], ins[1], ins[2])


@op("LeakyRelu")
def _leaky_relu(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return F.leaky_relu(ins[0], a.get("alpha", 0.01))


@op("PRelu")
def _prelu(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, slope = ins
    return torch.where(x < 0, x * slope, x)


@op("Elu")
def _elu(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return F.elu(ins[0], a.get("alpha", 1.0))


@op("Celu")
def _celu(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return F.celu(ins[0], a.get("alpha", 1.0))


@op("Selu")
def _selu(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    alpha, gamma = a.get("alpha", 1.67326319217681884765625), a.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@op("ThresholdedRelu")
def _thresholded_relu(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    return torch.where(x > a.get("alpha", 1.0), x, torch.zeros_like(x))


@op("HardSigmoid")
def _hard_sigmoid(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return torch.clamp(a.get("alpha", 0.2) * ins[0] + a.get("beta", 0.5), 0, 1)


@op("HardSwish")
def _hard_swish(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return ins[0] * torch.clamp(ins[0] / 6 + 0.5, 0, 1)


@op("Gelu")
def _gelu(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return F.gelu(ins[0], approximate=a.get("approximate", "none"))


@op("Clip")
def _clip(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    lo = a.get("min") if "min" in a else (ins[1] if len(ins) > 1 else None)
    hi = a.get("max") if "max" in a else (ins[2] if len(ins) > 2 else None)
    inside = torch.ones_like(x, dtype=torch.bool)
    y = x
    if lo is not None:
        lo = torch.as_tensor(lo, dtype=x.dtype)
        y, inside = torch.maximum(y, lo), inside & (x > lo)
    if hi is not None:
        hi = torch.as_tensor(hi, dtype=x.dtype)
        y, inside = torch.minimum(y, hi), inside & (x < hi)
    # The value of a clamp; the gradient of torch's ReLU6/Hardtanh (zero at the bounds, not a half).
    return torch.where(inside, x, y.detach())


@op("Identity", "Dropout")
def _identity(ins: list[Any], a: Attrs, n: NodeInfo) -> list[Any]:
    x = ins[0]
    return [x, torch.ones_like(x, dtype=torch.bool)]  # Dropout's optional mask: nothing dropped


@op("Cast")
def _cast(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return ins[0].to(torch_dtype(int(a["to"])))


@op("CastLike")
def _cast_like(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return ins[0].to(ins[1].dtype)


# ---- linear layers and normalisation -----------------------------------------------------------


@op("Conv")
def _conv(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = w.dim() - 2
    if nd not in (1, 2, 3):
        raise n.refuse(f"{nd}-D convolution")
    strides, dil = a.get("strides", [1] * nd), a.get("dilations", [1] * nd)
    kernel = a.get("kernel_shape", list(w.shape[2:]))
    begin, end = _spatial_pads(a, x.shape[2:], kernel, strides, dil, n)
    padding: Any = begin
    if begin != end:
        x, padding = F.pad(x, _torch_pads(begin, end)), 0
    fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return fn(x, w, b, strides, padding, dil, int(a.get("group", 1)))


@op("ConvTranspose")
def _conv_transpose(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = w.dim() - 2
    if nd not in (1, 2, 3):
        raise n.refuse(f"{nd}-D transposed convolution")
    strides, dil = a.get("strides", [1] * nd), a.get("dilations", [1] * nd)
    out_pad = a.get("output_padding", [0] * nd)
    kernel = a.get("kernel_shape", list(w.shape[2:]))
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    y = fn(x, w, b, strides, 0, out_pad, int(a.get("group", 1)), dil)  # crop the pads afterwards
    if "output_shape" in a:
        begin, end = [], []
        for i in range(nd):
            total = y.shape[2 + i] - int(a["output_shape"][-nd + i])
            small = total // 2
            upper = a.get("auto_pad", "NOTSET") == "SAME_UPPER"
            begin.append(small if upper else total - small)
            end.append(total - begin[-1])
    elif a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(nd):
            total = max(y.shape[2 + i] - x.shape[2 + i] * strides[i], 0)
            small = total // 2
            begin.append(small if a["auto_pad"] == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    else:
        pads = a.get("pads", [0] * 2 * nd)
        begin, end = list(pads[:nd]), list(pads[nd:])
        del kernel
    return F.pad(y, [-p for p in _torch_pads(begin, end)]) if any(begin) or any(end) else y


@op("Gemm")
def _gemm(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, w = ins[0], ins[1]
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    if len(ins) > 2 and ins[2] is not None:
        y = y + a.get("beta", 1.0) * ins[2]
    return y


@op("MatMul")
def _matmul(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return torch.matmul(ins[0], ins[1])


@op("Einsum")
def _einsum(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return torch.einsum(a["equation"], *ins)


def _per_channel(t: torch.Tensor, rank: int) -> torch.Tensor:
    """A ``(C,)`` tensor shaped to broadcast over axis 1 of a rank-``rank`` tensor."""
    return t.reshape([1, -1] + [1] * (rank - 2))


@op("BatchNormalization")
def _batch_norm(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    if a.get("training_mode", 0):
        raise n.refuse("training_mode=1 (only inference-form BatchNorm is supported)")
    x, scale, bias, mean, var = ins[:5]
    # Written out (not F.batch_norm) so gradients reach the running statistics too; the
    # per-channel factor and shift are formed first, so the activation sees one multiply-add.
    factor = scale * torch.rsqrt(var + a.get("epsilon", 1e-5))
    shift = bias - mean * factor
    return x * _per_channel(factor, x.dim()) + _per_channel(shift, x.dim())


@op("InstanceNormalization")
def _instance_norm(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, scale, bias = ins
    dims = list(range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + a.get("epsilon", 1e-5))
    return y * _per_channel(scale, x.dim()) + _per_channel(bias, x.dim())


@op("LayerNormalization")
def _layer_norm(ins: list[Any], a: Attrs, n: NodeInfo) -> list[torch.Tensor]:
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    dims = list(range(_axis(int(a.get("axis", -1)), x.dim()), x.dim()))
    mean = x.mean(dims, keepdim=True)
    inv = torch.rsqrt(((x - mean) ** 2).mean(dims, keepdim=True) + a.get("epsilon", 1e-5))
    y = (x - mean) * inv * scale
    return [y + bias if bias is not None else y, mean, inv]


@op("GroupNormalization")
def _group_norm(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, scale, bias = ins
    groups, c = int(a["num_groups"]), x.shape[1]
    g = x.reshape(x.shape[0], groups, -1)
    mean = g.mean(-1, keepdim=True)
    g = (g - mean) * torch.rsqrt(((g - mean) ** 2).mean(-1, keepdim=True) + a.get("epsilon", 1e-5))
    if scale.numel() != c:  # opset 18: one scale per group
        scale, bias = scale.repeat_interleave(c // groups), bias.repeat_interleave(c // groups)
    return g.reshape(x.shape) * _per_channel(scale, x.dim()) + _per_channel(bias, x.dim())


@op("Softmax", "LogSoftmax")
def _softmax(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    fn = torch.softmax if n.op_type == "Softmax" else torch.log_softmax
    if n.opset >= 13:
        return fn(x, _axis(int(a.get("axis", -1)), x.dim()))
    axis = _axis(int(a.get("axis", 1)), x.dim())  # older opsets: coerced to 2-D at axis
    return fn(x.reshape(int(np.prod(x.shape[:axis])), -1), 1).reshape(x.shape)


# ---- pooling and reductions --------------------------------------------------------------------


def _pool_geometry(x: torch.Tensor, a: Attrs, n: NodeInfo) -> tuple[list[int], list[int], list[int], list[int]]:
    """Kernel, strides and begin/end pads of a MaxPool/AveragePool."""
    kernel = [int(k) for k in a["kernel_shape"]]
    nd = len(kernel)
    strides = [int(s) for s in a.get("strides", [1] * nd)]
    begin, end = _spatial_pads(a, x.shape[2:], kernel, strides, a.get("dilations", [1] * nd), n)
    return kernel, strides, begin, end


def _torch_padding(kernel: list[int], begin: list[int], end: list[int]) -> list[int] | None:
    """The symmetric padding torch's pooling takes itself, or None when it must be padded explicitly."""
    return begin if begin == end and all(2 * p <= k for p, k in zip(begin, kernel)) else None


@op("MaxPool")
def _max_pool(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    kernel, strides, begin, end = _pool_geometry(x, a, n)
    nd = len(kernel)
    padding: Any = _torch_padding(kernel, begin, end)
    if padding is None:
        x, padding = F.pad(x, _torch_pads(begin, end), value=float("-inf")), 0
    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
    return fn(x, kernel, strides, padding, a.get("dilations", [1] * nd), bool(a.get("ceil_mode", 0)))


@op("AveragePool")
def _avg_pool(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    kernel, strides, begin, end = _pool_geometry(x, a, n)
    nd = len(kernel)
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
    ceil, include = bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0))
    if any(d != 1 for d in a.get("dilations", [1] * nd)):
        raise n.refuse("dilations other than 1")
    padding = _torch_padding(kernel, begin, end)
    if padding is not None:
        return fn(x, kernel, strides, padding, ceil, include)
    pads = _torch_pads(begin, end)
    total = fn(F.pad(x, pads), kernel, strides, 0, ceil, True)
    if include:
        return total
    # Padded explicitly: divide by the number of real (unpadded) elements in each window.
    real = fn(F.pad(torch.ones_like(x[:1, :1]), pads), kernel, strides, 0, ceil, True)
    return total / real


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    dims = list(range(2, x.dim()))
    return x.mean(dims, keepdim=True) if n.op_type == "GlobalAveragePool" else x.amax(dims, keepdim=True)


_REDUCE: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, d, k: x.mean(d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(d, keepdim=k),
    "ReduceProd": lambda x, d, k: functools.reduce(lambda t, i: t.prod(i, keepdim=True), d, x)
    if k else functools.reduce(lambda t, i: t.prod(i, keepdim=True), d, x).reshape(
        [s for i, s in enumerate(x.shape) if i not in d]),
    "ReduceL1": lambda x, d, k: x.abs().sum(d, keepdim=k),
    "ReduceL2": lambda x, d, k: x.square().sum(d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: x.square().sum(d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: x.sum(d, keepdim=k).log(),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
}


def _reduce(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    axes = _attr_or_input(a, "axes", ins, 1)
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    dims = sorted(_axis(d, x.dim()) for d in axes)
    return _REDUCE[n.op_type](x, dims, bool(a.get("keepdims", 1)))


for _name in _REDUCE:
    OPS[_name] = _reduce


@op("ArgMax", "ArgMin")
def _arg(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    axis, keep = _axis(int(a.get("axis", 0)), x.dim()), bool(a.get("keepdims", 1))
    fn = torch.argmax if n.op_type == "ArgMax" else torch.argmin
    if a.get("select_last_index", 0):
        return x.shape[axis] - 1 - fn(x.flip(axis), axis, keepdim=keep)
    return fn(x, axis, keepdim=keep)


# ---- shapes and layout -------------------------------------------------------------------------


@op("Shape")
def _shape(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    dims = list(ins[0].shape)
    start, end = a.get("start", 0), a.get("end")
    return torch.tensor(dims[slice(start, end)], dtype=torch.int64)


@op("Size")
def _size(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return torch.tensor(ins[0].numel(), dtype=torch.int64)


@op("Reshape")
def _reshape(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, shape = ins[0], ints(ins[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def _flatten(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    axis = _axis(int(a.get("axis", 1)), x.dim())
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@op("Transpose")
def _transpose(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    return x.permute(a.get("perm", list(range(x.dim() - 1, -1, -1))))


@op("Squeeze")
def _squeeze(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    axes = _attr_or_input(a, "axes", ins, 1)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(d, x.dim()) for d in axes)) if axes else x


@op("Unsqueeze")
def _unsqueeze(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    axes = _attr_or_input(a, "axes", ins, 1) or []
    rank = x.dim() + len(axes)
    for d in sorted(_axis(d, rank) for d in axes):
        x = x.unsqueeze(d)
    return x


@op("Concat")
def _concat(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    parts = [t for t in ins if t is not None]
    return torch.cat(parts, _axis(int(a["axis"]), parts[0].dim()))


def _split_sizes(length: int, split: list[int] | None, parts: int) -> list[int]:
    if split:
        return split
    size = math.ceil(length / parts)
    return [size] * (parts - 1) + [length - size * (parts - 1)]


@op("Split")
def _split(ins: list[Any], a: Attrs, n: NodeInfo) -> list[torch.Tensor]:
    x = ins[0]
    axis = _axis(int(a.get("axis", 0)), x.dim())
    sizes = _split_sizes(x.shape[axis], _attr_or_input(a, "split", ins, 1), int(a.get("num_outputs", n.outputs)))
    return list(torch.split(x, sizes, axis))


@op("SplitToSequence")
def _split_to_sequence(ins: list[Any], a: Attrs, n: NodeInfo) -> list[list[torch.Tensor]]:
    x = ins[0]
    axis = _axis(int(a.get("axis", 0)), x.dim())
    split = ins[1] if len(ins) > 1 else None
    if split is None:
        parts = list(torch.split(x, 1, axis))
        return [parts if a.get("keepdims", 1) else [p.squeeze(axis) for p in parts]]
    sizes = ints(split)
    return [list(torch.split(x, sizes[0] if split.dim() == 0 else sizes, axis))]  # one output: the sequence


@op("SequenceAt")
def _sequence_at(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return ins[0][ints(ins[1])[0]]


@op("SequenceConstruct")
def _sequence_construct(ins: list[Any], a: Attrs, n: NodeInfo) -> list[Any]:
    return [list(ins)]


@op("SequenceLength")
def _sequence_length(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return torch.tensor(len(ins[0]), dtype=torch.int64)


@op("ConcatFromSequence")
def _concat_from_sequence(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    seq = ins[0]
    if a.get("new_axis", 0):
        return torch.stack(seq, _axis(int(a["axis"]), seq[0].dim() + 1))
    return torch.cat(seq, _axis(int(a["axis"]), seq[0].dim()))


@op("Slice")
def _slice(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    starts = _attr_or_input(a, "starts", ins, 1) or []
    ends = _attr_or_input(a, "ends", ins, 2) or []
    axes = _attr_or_input(a, "axes", ins, 3) or list(range(len(starts)))
    steps = _attr_or_input(a, "steps", ins, 4) or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.dim())
        idx = range(*slice(start, end, step).indices(x.shape[axis]))
        if step > 0:
            x = x.narrow(axis, idx.start, len(idx)) if step == 1 else x[(slice(None),) * axis + (slice(
                idx.start, idx.stop, step),)]
        else:
            x = x.index_select(axis, torch.tensor(list(idx), dtype=torch.int64))
    return x


def _indices(idx: torch.Tensor, size: int) -> torch.Tensor:
    idx = idx.to(torch.int64)
    return torch.where(idx < 0, idx + size, idx)


@op("Gather")
def _gather(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, idx = ins
    axis = _axis(int(a.get("axis", 0)), x.dim())
    flat = x.index_select(axis, _indices(idx, x.shape[axis]).reshape(-1))
    return flat.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


@op("GatherElements")
def _gather_elements(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, idx = ins
    axis = _axis(int(a.get("axis", 0)), x.dim())
    return torch.gather(x, axis, _indices(idx, x.shape[axis]))


@op("GatherND")
def _gather_nd(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x, idx = ins
    b = int(a.get("batch_dims", 0))
    k = idx.shape[-1]
    batch = x.shape[:b]
    xb = x.reshape(-1, *x.shape[b:])  # (B, d_b, ..., d_r)
    ib = _indices(idx, 0).reshape(xb.shape[0], -1, k)  # (B, M, k)
    sizes = torch.tensor(xb.shape[1:k + 1], dtype=torch.int64)
    ib = torch.where(ib < 0, ib + sizes, ib)
    rows = torch.arange(xb.shape[0]).unsqueeze(1).expand(ib.shape[:2])
    index = (rows, *ib.unbind(-1))
    picked = xb[index]  # (B, M, d_{b+k}, ...)
    return picked.reshape(*batch, *idx.shape[b:-1], *x.shape[b + k:])


@op("Trilu")
def _trilu(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    k = int(ins[1].item()) if len(ins) > 1 and ins[1] is not None else 0
    return torch.triu(ins[0], k) if a.get("upper", 1) else torch.tril(ins[0], k)


@op("Expand")
def _expand(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    return torch.broadcast_to(x, torch.broadcast_shapes(tuple(x.shape), tuple(ints(ins[1]))))


@op("Tile")
def _tile(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    return ins[0].repeat(ints(ins[1]))


@op("Constant")
def _constant(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    if "value" in a:
        return to_tensor(a["value"])
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32), ("value_int", torch.int64),
                       ("value_ints", torch.int64)):
        if key in a:
            return torch.tensor(a[key], dtype=dtype)
    raise n.refuse(f"attributes {sorted(a)}")


@op("ConstantOfShape")
def _constant_of_shape(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    value = to_tensor(a["value"]) if "value" in a else torch.zeros(1, dtype=torch.float32)
    return torch.full(ints(ins[0]), value.reshape(-1)[0].item(), dtype=value.dtype)


@op("Range")
def _range(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    start, limit, delta = ins
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@op("Pad")
def _pad(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    pads = [int(p) for p in a["pads"]] if "pads" in a else ints(ins[1])
    value = a.get("value", 0.0)
    if len(ins) > 2 and ins[2] is not None and ins[2].numel():
        value = ins[2].reshape(-1)[0].item()
    rank = x.dim()
    axes = [_axis(d, rank) for d in ints(ins[3])] if len(ins) > 3 and ins[3] is not None else list(range(rank))
    begin, end = [0] * rank, [0] * rank
    for k, d in enumerate(axes):
        begin[d], end[d] = pads[k], pads[k + len(axes)]
    torch_pads = _torch_pads(begin, end)
    while torch_pads and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    mode = a.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None or len(torch_pads) // 2 > max(rank - 2, 0) or len(torch_pads) > 6:
        raise n.refuse(f"mode '{mode}' on axes {axes}")
    return F.pad(x, torch_pads, mode=torch_mode)


@op("Resize", "Upsample")
def _resize(ins: list[Any], a: Attrs, n: NodeInfo) -> torch.Tensor:
    x = ins[0]
    if n.op_type == "Upsample" or n.opset < 11:
        scales, sizes = ins[1], None
    else:
        scales = ins[2] if len(ins) > 2 else None
        sizes = ins[3] if len(ins) > 3 else None
    mode = a.get("mode", "nearest")
    coord = a.get("coordinate_transformation_mode", "half_pixel" if n.opset >= 11 else "asymmetric")
    if a.get("antialias", 0) or a.get("axes") or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise n.refuse("antialias, axes and keep_aspect_ratio_policy are not supported")
    nd = x.dim() - 2
    kwargs: dict[str, Any] = {}
    if sizes is not None and sizes.numel():
        size = ints(sizes)
        if size[:2] != list(x.shape[:2]):
            raise n.refuse("resizing the batch or channel axis")
        kwargs["size"] = size[2:]
    else:
        scale = [float(s) for s in scales.reshape(-1).tolist()]
        if scale[:2] != [1.0, 1.0]:
            raise n.refuse("resizing the batch or channel axis")
        kwargs["scale_factor"] = scale[2:]
    if mode == "nearest":
        if coord != "asymmetric" or a.get("nearest_mode", "round_prefer_floor" if n.opset >= 11 else "floor") != "floor":
            raise n.refuse(f"nearest mode with coordinate_transformation_mode '{coord}' (only asymmetric, floor)")
        return F.interpolate(x, mode="nearest", **kwargs)
    if mode in ("linear", "cubic") and coord in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        if mode == "cubic" and (nd != 2 or a.get("cubic_coeff_a", -0.75) != -0.75):
            raise n.refuse("cubic mode other than 2-D with cubic_coeff_a -0.75")
        torch_mode = "bicubic" if mode == "cubic" else ("linear", "bilinear", "trilinear")[nd - 1]
        return F.interpolate(x, mode=torch_mode, align_corners=coord == "align_corners", **kwargs)
    raise n.refuse(f"mode '{mode}' with coordinate_transformation_mode '{coord}'")
