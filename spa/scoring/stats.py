"""Statistics of consumer inputs without the two-world run of :mod:`spa.scoring.worlds`.

``x̃`` is a consumer's input column vector (a Conv patch, a Gemm row) with a constant 1
appended, so the bias takes part in the refit.

* The **moment model** (``obspa --stats moments``, no data, no onnxruntime run):
  :class:`MomentEstimator` draws samples of every channel and pushes them through the model's
  own weights. A BatchNorm in inference form fixes its output channel's marginal to
  ``N(β, γ²)`` while keeping the correlations the previous layer's weights create; activations
  and element-wise ops are applied exactly; a model input counts as ``N(0, 1)``; kernel taps get
  a ``ρ^distance`` spatial prior. Samples are reference-counted over the readers asked for and
  dropped after the last one. :func:`consumer_statistics` turns them into a consumer's ``H``
  (or, without samples, the independent ``H = diag(v) + m mᵀ``).
* **Activation accumulators** (:func:`activation_H`, :func:`activation_moments`): ``H`` or
  per-column moments from activations of given input batches run through onnxruntime, streamed
  batch by batch and subsampled to at most ``rows_per_batch`` rows per consumer. The
  ``fluctuation`` and ``activation`` criteria use them, and the moment model for the consumers
  it cannot follow.
* :func:`conv_windows` / :func:`conv_patches`: a Conv's input patches exactly as it reads them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from spa.analysis.consumers import Consumer
from spa.model.graph import ModelContext, attr_float, attr_int, attr_ints, attr_str
from spa.model.runtime import probe_session

log = logging.getLogger(__name__)

SAMPLES = 4096
#: Correlation of a feature map with itself one position away, decaying as rho**distance over a
#: kernel window. Data-free statistics need some spatial prior: with 0 the kernel taps of a
#: patch would be independent, which real feature maps (and images, far more) are not.
FEATURE_RHO = 0.8
INPUT_RHO = 0.98


def static_dims(dims: Sequence[int | None]) -> tuple[int, ...] | None:
    """``dims`` when every one of them is known, else None."""
    known = tuple(d for d in dims if d is not None)
    return known if len(known) == len(dims) else None


def tap_correlation(kshape: tuple[int, ...], rho: float) -> np.ndarray:
    """``rho ** distance`` between the positions of a kernel window, (taps x taps)."""
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in kshape], indexing="ij"), axis=-1).reshape(-1, len(kshape))
    d = np.sqrt(((grid[:, None, :] - grid[None, :, :]) ** 2).sum(-1))
    return rho**d


# --------------------------------------------------------------------------------------
# moments without data
# --------------------------------------------------------------------------------------
def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26, |error| < 1.5e-7: enough for moments.
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


UnaryRule = Callable[[onnx.NodeProto, np.ndarray, ModelContext], np.ndarray | None]


def _clip(node: onnx.NodeProto, x: np.ndarray, ctx: ModelContext) -> np.ndarray | None:
    """Clip with bounds from inputs 1/2 (opset 11+) or the ``min``/``max`` attributes; None if not constant."""
    lo = _scalar(ctx, node, 1, attr_float(node, "min", -np.inf))
    hi = _scalar(ctx, node, 2, attr_float(node, "max", np.inf))
    return None if lo is None or hi is None else np.clip(x, lo, hi)


def _selu(node: onnx.NodeProto, x: np.ndarray, ctx: ModelContext) -> np.ndarray:
    a, g = attr_float(node, "alpha", 1.67326), attr_float(node, "gamma", 1.0507)
    return g * np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


def _gelu_node(node: onnx.NodeProto, x: np.ndarray, ctx: ModelContext) -> np.ndarray:
    """Gelu, tanh-approximated only when the node asks for it (else the erf form)."""
    return _gelu(x) if attr_str(node, "approximate", "none") == "tanh" else 0.5 * x * (1 + _erf(x / math.sqrt(2)))


#: Element-wise ops applied exactly to samples: op type -> ``f(node, x, ctx)``. A rule may answer
#: None (a Clip bound that is not a constant); an op not listed stops the moment model there.
_UNARY: dict[str, UnaryRule] = {
    **{op: (lambda n, x, c: x) for op in ("Identity", "Dropout", "Cast", "CastLike")},
    "Relu": lambda n, x, c: np.maximum(x, 0),
    "LeakyRelu": lambda n, x, c: np.where(x >= 0, x, attr_float(n, "alpha", 0.01) * x),
    "Sigmoid": lambda n, x, c: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": lambda n, x, c: np.tanh(x),
    "HardSigmoid": lambda n, x, c: np.clip(attr_float(n, "alpha", 0.2) * x + attr_float(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda n, x, c: x * np.clip(x / 6.0 + 0.5, 0, 1),
    "Elu": lambda n, x, c: np.where(x > 0, x, attr_float(n, "alpha", 1.0) * np.expm1(np.minimum(x, 0))),
    "Selu": _selu,
    "Softplus": lambda n, x, c: np.logaddexp(0, x),
    "Mish": lambda n, x, c: x * np.tanh(np.logaddexp(0, x)),
    "Gelu": _gelu_node,
    "Erf": lambda n, x, c: _erf(x),
    "Neg": lambda n, x, c: -x,
    "Abs": lambda n, x, c: np.abs(x),
    "Clip": _clip,
}


def _unary(node: onnx.NodeProto, x: np.ndarray, ctx: ModelContext) -> np.ndarray | None:
    """Samples of element-wise ``node``'s output from samples ``x`` of its input; None if not modelled."""
    rule = _UNARY.get(node.op_type)
    return None if rule is None else rule(node, x, ctx)


def _scalar(ctx: ModelContext, node: onnx.NodeProto, i: int, default: float) -> float | None:
    """Constant scalar input ``i`` of ``node``; ``default`` when the input is absent, None if not constant."""
    if len(node.input) <= i or not node.input[i]:
        return float(default)
    v = ctx.constant_value(node.input[i])
    return None if v is None or v.size != 1 else float(v.reshape(-1)[0])


_PASS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Pad", "Resize", "Upsample", "LpPool",
         "GlobalLpPool", "ReduceMean", "ReduceMax"}
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Max": np.maximum,
           "Min": np.minimum}


class MomentEstimator:
    """Per-channel samples of activations (channel axis 1), derived from the model alone.

    With ``readers`` (the tensors whose statistics will be asked for, one entry per request, in
    topological order), samples are reference-counted: a tensor's samples are dropped once every
    output derived from it exists and every request for it is :meth:`done`, so memory holds what
    is live at one point of the graph rather than every tensor's samples.
    """

    def __init__(self, ctx: ModelContext, seed: int = 0, samples: int = SAMPLES,
                 readers: list[str] | None = None) -> None:
        self.ctx = ctx
        self.rng = np.random.default_rng(seed)
        self.s = samples
        self._memo: dict[str, np.ndarray | None] = {}
        self._pending: dict[str, int] | None = None if readers is None else self._reader_counts(readers)

    def _reader_counts(self, readers: list[str]) -> dict[str, int]:
        """Per tensor: outputs of the nodes that read it and lead to ``readers``, plus requests."""
        needed: set[str] = set()
        stack = list(readers)
        while stack:
            t = stack.pop()
            if t in needed or not t:
                continue
            needed.add(t)
            node = self.ctx.producer.get(t)
            if node is not None:
                stack.extend(node.input)
        counts: dict[str, int] = {}
        for t in needed:
            node = self.ctx.producer.get(t)
            for i in set(node.input) if node is not None else ():
                if i:
                    counts[i] = counts.get(i, 0) + 1
        for r in readers:
            counts[r] = counts.get(r, 0) + 1
        return counts

    def done(self, tensor: str) -> None:
        """One request for ``tensor``'s statistics is finished."""
        self._release(tensor)

    def _release(self, tensor: str) -> None:
        if self._pending is None or tensor not in self._pending:
            return
        self._pending[tensor] -= 1
        if self._pending[tensor] <= 0:
            self._memo.pop(tensor, None)

    def moments(self, tensor: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Mean and variance of every index of ``tensor``'s axis 1 (features after Flatten)."""
        node = self.ctx.producer.get(tensor)
        if node is not None and node.op_type in ("Flatten", "Reshape"):
            src = node.input[0]
            shape = self.ctx.shape(src)
            inner = static_dims(shape[2:]) if shape is not None else None
            if inner is not None and self.ctx.dim(tensor, 1) == \
                    (self.ctx.dim(src, 1) or 0) * int(np.prod(inner, dtype=np.int64)):
                ch = self.moments(src)
                if ch is None:
                    return None
                k = int(np.prod(inner, dtype=np.int64))
                return np.repeat(ch[0], k), np.repeat(ch[1], k)
        x = self.samples(tensor)
        if x is None:
            return None
        return x.mean(axis=0), x.var(axis=0)

    def samples(self, tensor: str) -> np.ndarray | None:
        """(samples, channels) draws of ``tensor`` along axis 1, or None if not derivable."""
        if tensor not in self._memo:
            self._memo[tensor] = None  # cycle guard
            try:
                out = self._derive(tensor)
            except (ValueError, FloatingPointError):
                out = None
            self._memo[tensor] = None if out is None else out.astype(np.float32)  # half the memory
            node = self.ctx.producer.get(tensor)
            for i in set(node.input) if node is not None else ():
                self._release(i)
        return self._memo.get(tensor)

    def _normal(self, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        return self.rng.standard_normal((self.s, mean.size)) * np.sqrt(np.maximum(var, 0)) + mean

    def _derive(self, tensor: str) -> np.ndarray | None:
        ctx = self.ctx
        c = ctx.dim(tensor, 1) if (ctx.rank(tensor) or 0) >= 2 else None
        if tensor in ctx.graph_inputs:
            return None if c is None else self.rng.standard_normal((self.s, c))
        node = ctx.producer.get(tensor)
        if node is None or c is None:
            return None
        op = node.op_type
        if op in ("BatchNormalization", "InstanceNormalization"):
            gamma, beta = ctx.constant_value(node.input[1]), ctx.constant_value(node.input[2])
            if gamma is None or beta is None:
                return None
            g, b = gamma.astype(np.float64), beta.astype(np.float64)
            u = self.samples(node.input[0])
            if u is None or u.shape[1] != g.size:
                return self._normal(b, g**2)
            # The BatchNorm fixes each channel's marginal (N(beta, gamma^2)); the samples of its
            # input keep the correlations the previous layer's weights create between channels.
            std = u.std(axis=0)
            z = np.where(std > 1e-12, (u - u.mean(axis=0)) / np.where(std > 1e-12, std, 1.0), 0.0)
            return b + g * z
        if op in _PASS or op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
            x = self.samples(node.input[0])
            return x if x is not None and x.shape[1] == c else None
        if op == "Concat" and attr_int(node, "axis", 0) % (ctx.rank(tensor) or 1) == 1:
            parts = [self.samples(i) for i in node.input]
            known = [p for p in parts if p is not None]
            return np.concatenate(known, axis=1) if len(known) == len(parts) else None
        if op in _BINARY:
            lhs, rhs = (self._operand(i, c) for i in node.input[:2])
            return None if lhs is None or rhs is None else _BINARY[op](lhs, rhs)
        if op in ("Conv", "Gemm", "MatMul"):
            return self._linear(node, c)
        x = self.samples(node.input[0]) if node.input else None
        return None if x is None else _unary(node, x, ctx)

    def _operand(self, name: str, c: int) -> np.ndarray | None:
        v = self.ctx.constant_value(name)
        if v is None:
            return self.samples(name)
        v = np.asarray(v, dtype=np.float64)
        if v.size == 1:
            return v.reshape(1, 1)
        squeezed = v.reshape(-1)
        return squeezed.reshape(1, c) if squeezed.size == c else None

    def _taps(self, x: np.ndarray, kshape: tuple[int, ...], rho: float) -> np.ndarray:
        """Samples of ``x`` at every position of a kernel window, as (taps, samples, channels).

        Positions are mixtures of row-permuted (independent) copies with correlation
        ``rho ** distance``; means and variances are kept.
        """
        taps = int(np.prod(kshape, dtype=np.int64))
        m = x.mean(axis=0)
        z = np.stack([x if t == 0 else x[self.rng.permutation(x.shape[0])] for t in range(taps)]) - m
        if taps == 1 or rho == 0:
            return z + m
        chol = np.linalg.cholesky(tap_correlation(kshape, rho) + 1e-9 * np.eye(taps))
        return (chol @ z.reshape(taps, -1)).reshape(z.shape) + m

    def _linear(self, node: onnx.NodeProto, c: int) -> np.ndarray | None:
        x = self.samples(node.input[0])
        w = self.ctx.constant_value(node.input[1])
        out = None if x is None or w is None else self._linear_samples(node, x, np.asarray(w, np.float64), c)
        return out if out is not None else self._linear_moments(node, c)

    def _linear_samples(self, node: onnx.NodeProto, x: np.ndarray, w: np.ndarray, c: int) -> np.ndarray | None:
        """Samples of a linear layer's output channel from samples of its input channels."""
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        b = np.zeros(c) if bias is None else self.ctx.constant_value(bias)
        if b is None or np.asarray(b).size not in (1, c):
            return None
        b = np.broadcast_to(np.asarray(b, np.float64).reshape(-1), (c,))
        op = node.op_type
        if op == "Conv":
            groups = attr_int(node, "group", 1)
            taps = int(np.prod(w.shape[2:], dtype=np.int64))
            if w.shape[0] != c or x.shape[1] != w.shape[1] * groups:
                return None
            rho = INPUT_RHO if node.input[0] in self.ctx.graph_inputs else FEATURE_RHO
            xs = self._taps(x, tuple(int(k) for k in w.shape[2:]), rho)  # (T, S, C)
            wt = w.reshape(w.shape[0], w.shape[1], taps)  # (M, C/g, T)
            cin, cout = w.shape[1], c // groups
            if cin == 1:  # depthwise: output m reads input channel m // (M/g)
                src = np.arange(c) // cout
                return (xs[:, :, src] * wt[:, 0, :].T[:, None, :]).sum(axis=0) + b
            flat = xs.transpose(1, 0, 2)  # (S, T, C): one BLAS product per conv group
            parts = [flat[:, :, k * cin:(k + 1) * cin].reshape(flat.shape[0], -1)
                     @ wt[k * cout:(k + 1) * cout].transpose(0, 2, 1).reshape(cout, -1).T for k in range(groups)]
            return np.concatenate(parts, axis=1) + b
        if op == "Gemm" and not attr_int(node, "transA", 0):
            mat = w if attr_int(node, "transB", 0) else w.T
            return x @ mat.T + b if mat.shape == (c, x.shape[1]) else None
        if op == "MatMul" and w.ndim == 2 and w.shape == (x.shape[1], c):
            return x @ w + b
        return None

    def _linear_moments(self, node: onnx.NodeProto, c: int) -> np.ndarray | None:
        ctx = self.ctx
        w = ctx.constant_value(node.input[1])
        if w is None:
            return None
        kind = {"Conv": "conv", "Gemm": "gemm", "MatMul": "matmul"}[node.op_type]
        if kind == "conv" and attr_int(node, "group", 1) != 1:
            return None
        if kind == "gemm" and attr_int(node, "transA", 0):
            return None
        fake = Consumer(node, kind, node.input[1], node.input[2] if len(node.input) > 2 and node.input[2] else None,
                        node.input[0], np.zeros(0, np.int64), 0)
        mat = fake.matrix(ctx)
        mom = self.moments(node.input[0])
        if mom is None or mat.shape[0] != c:
            return None
        m_in, v_in = mom
        taps = mat.shape[1] // max(m_in.size, 1)
        if taps * m_in.size != mat.shape[1]:
            return None
        m_cols, v_cols = np.repeat(m_in, taps), np.repeat(v_in, taps)
        mean = mat @ m_cols + fake.bias_vector(ctx)
        var = (mat**2) @ v_cols
        return self._normal(mean, var)


def consumer_statistics(consumer: Consumer, est: MomentEstimator) -> Callable[[], np.ndarray] | tuple[np.ndarray, np.ndarray] | None:
    """Data-free statistics of a consumer's input columns: the full augmented ``H`` when
    samples of its input channels exist (kernel taps of a Conv are independent positions:
    ``E[x_ct x_c't'] = E[x_c x_c']`` for the same tap, ``m_c m_c'`` across taps), else the
    independent ``(mean, var)`` of every column. ``H`` comes as a function that builds it, so
    only the consumers being worked on hold one (memory: the channel statistics are C x C)."""
    x = est.samples(consumer.x) if consumer.x not in est.ctx.graph_inputs else None
    if x is None or not (consumer.kind == "conv" and consumer.cols % x.shape[1] == 0
                         or consumer.kind != "conv" and x.shape[1] == consumer.cols):
        return column_moments(consumer, est)
    x = x.astype(np.float64)
    m = x.mean(axis=0)
    second = x.T @ x / x.shape[0]
    taps = consumer.cols // x.shape[1]
    kshape = static_dims((est.ctx.shape(consumer.weight) or ())[2:]) if consumer.kind == "conv" else ()
    corr = tap_correlation(kshape, FEATURE_RHO) if kshape and int(np.prod(kshape)) == taps else np.eye(taps)
    return lambda: _kron_h(second, m, corr)


def _kron_h(second: np.ndarray, m: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """Augmented ``H`` of patches whose taps correlate as ``corr`` (channel-major columns)."""
    taps = corr.shape[0]
    mm = np.outer(m, m)
    h = np.kron(second - mm, corr) + np.kron(mm, np.ones((taps, taps))) if taps > 1 else second
    out = np.empty((h.shape[0] + 1, h.shape[0] + 1))
    out[:-1, :-1] = h
    out[:-1, -1] = out[-1, :-1] = np.repeat(m, taps)
    out[-1, -1] = 1.0
    return out


def column_moments(consumer: Consumer, est: MomentEstimator) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and variance of every input column of ``consumer`` (a channel's repeated per tap)."""
    mom = est.moments(consumer.x)
    if mom is None:
        return None
    m, v = mom
    taps = consumer.cols // max(m.size, 1)
    if taps * m.size != consumer.cols:
        return None
    return np.repeat(m, taps), np.repeat(v, taps)


# --------------------------------------------------------------------------------------
# activations from data (real or synthetic)
# --------------------------------------------------------------------------------------
def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    """Integer-list attribute ``name`` of ``node``, ``default`` only when it is absent."""
    value = attr_ints(node, name)
    return default if value is None else value


def conv_windows(x: np.ndarray, node: onnx.NodeProto, kshape: tuple[int, ...]) -> np.ndarray:
    """A view ``(N, C, *out, *kshape)`` of every window Conv ``node`` reads from ``x``."""
    nd = len(kshape)
    strides = _ints(node, "strides", [1] * nd)
    dil = _ints(node, "dilations", [1] * nd)
    pads = _ints(node, "pads", [0] * (2 * nd))
    auto = attr_str(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i in range(nd):
            n = x.shape[2 + i]
            out = -(-n // strides[i])
            total = max(0, (out - 1) * strides[i] + (kshape[i] - 1) * dil[i] + 1 - n)
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[i], pads[i + nd] = lo, total - lo
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    eff = tuple((k - 1) * d + 1 for k, d in zip(kshape, dil))
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nd)))
    return win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
               + tuple(slice(None, None, d) for d in dil)]


def conv_patches(x: np.ndarray, node: onnx.NodeProto, kshape: tuple[int, ...], rows: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Up to ``rows`` random unfolded patches of ``x`` as Conv ``node`` sees them."""
    nd = len(kshape)
    win = conv_windows(x, node, kshape)
    n, ch = x.shape[:2]
    out_shape = win.shape[2:2 + nd]
    total = n * int(np.prod(out_shape, dtype=np.int64))
    pick = rng.choice(total, size=min(rows, total), replace=False)
    idx = np.unravel_index(pick, (n, *out_shape))
    index = (idx[0], slice(None), *idx[1:])
    sel = win[index]  # (picked, C, k...)
    return sel.reshape(len(pick), ch * int(np.prod(kshape, dtype=np.int64)))


def consumer_rows(c: Consumer, x: np.ndarray, ctx: ModelContext, rows: int, rng: np.random.Generator) -> np.ndarray:
    if c.kind == "conv":
        shape = ctx.shape(c.weight)
        kshape = static_dims(shape[2:]) if shape is not None else None
        assert kshape is not None, f"conv weight '{c.weight}' has no static kernel shape"
        return conv_patches(x, c.node, kshape, rows, rng)
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > rows:
        flat = flat[rng.choice(flat.shape[0], size=rows, replace=False)]
    return flat


@dataclass
class Accumulator:
    h: np.ndarray
    n: int = 0

    def add(self, rows: np.ndarray) -> None:
        r = np.concatenate([rows.astype(np.float32), np.ones((rows.shape[0], 1), np.float32)], axis=1)
        self.h += (r.T @ r).astype(np.float64)  # one batch in float32 (fast), the sum in float64
        self.n += r.shape[0]

    def value(self) -> np.ndarray:
        """The mean of the rows' outer products, shrunk toward its diagonal when there are fewer
        rows than columns (the raw estimate would be singular and the refit would overfit)."""
        h = self.h / max(self.n, 1)
        cols = h.shape[0] - 1
        if self.n >= 4 * cols:
            return h
        shrink = min(0.5, cols / max(4.0 * self.n, 1.0))
        diag = np.diag(np.diag(h))
        diag[-1, :-1], diag[:-1, -1] = h[-1, :-1], h[:-1, -1]  # keep the means
        return (1 - shrink) * h + shrink * diag


def _stream(consumers: list[Consumer], ctx: ModelContext, batches: Iterator[dict[str, np.ndarray]],
            accumulators: Mapping[str, Accumulator | ColumnMoments], rows_per_batch: int, seed: int,
            device: str) -> None:
    """Feed every batch's unfolded consumer inputs (subsampled) to their accumulators."""

    names = sorted({c.x for c in consumers})
    sess = probe_session(ctx.model, names, device)
    rng = np.random.default_rng(seed)
    for feeds in batches:
        values = dict(zip(names, sess.run(names, feeds)))
        for c in consumers:
            accumulators[c.node.name].add(consumer_rows(c, values[c.x], ctx, rows_per_batch, rng))


def activation_H(consumers: list[Consumer], ctx: ModelContext, batches: Iterator[dict[str, np.ndarray]],
                 rows_per_batch: int = 2048, seed: int = 0, device: str = "cpu") -> dict[str, np.ndarray]:
    """``H`` for every consumer (by node name) from onnxruntime activations of ``batches``."""
    acc = {c.node.name: Accumulator(np.zeros((c.cols + 1, c.cols + 1))) for c in consumers}
    _stream(consumers, ctx, batches, acc, rows_per_batch, seed, device)
    return {k: a.value() for k, a in acc.items() if a.n}


@dataclass
class ColumnMoments:
    """Running first moments of every input column of a consumer."""

    total: np.ndarray
    squares: np.ndarray
    absolute: np.ndarray
    n: int = 0

    def add(self, rows: np.ndarray) -> None:
        r = rows.astype(np.float64)
        self.total += r.sum(axis=0)
        self.squares += np.square(r).sum(axis=0)
        self.absolute += np.abs(r).sum(axis=0)
        self.n += r.shape[0]

    def mean_var_abs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = max(self.n, 1)
        mean = self.total / n
        return mean, np.maximum(self.squares / n - mean**2, 0.0), self.absolute / n


def activation_moments(consumers: list[Consumer], ctx: ModelContext, batches: Iterator[dict[str, np.ndarray]],
                       rows_per_batch: int = 2048, seed: int = 0,
                       device: str = "cpu") -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per consumer (by node name): mean, variance and mean |x| of every input column."""
    acc = {c.node.name: ColumnMoments(np.zeros(c.cols), np.zeros(c.cols), np.zeros(c.cols)) for c in consumers}
    _stream(consumers, ctx, batches, acc, rows_per_batch, seed, device)
    return {k: a.mean_var_abs() for k, a in acc.items() if a.n}
