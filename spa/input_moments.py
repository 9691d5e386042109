"""Second moments ``E[x̃ ỹᵀ]`` of a consumer's input columns, from activations.

``x̃`` is the consumer's input column vector with a constant 1 appended (so the bias takes part
in the refit); ``ỹ`` is the same vector from another world (the pruned model, for sequential
compensation), or ``x̃`` itself.

Rows are Gemm/MatMul input rows, or a Conv's unfolded patches exactly as the Conv sees them
(padding, strides, dilations), drawn at the same positions from ``x`` and ``y``. A row costs
``cols²`` multiply-adds, so the number of rows is set by a budget of :data:`H_MACS` per matrix,
but never below ``2 · cols`` (then :func:`shrink` regularises) nor above :data:`MAX_ROWS`.

A Conv wider than :data:`PATCH_MAX_COLS` columns (``C·k²``, e.g. a 3x3 conv on 512 channels)
uses *offset* moments instead: ``R(δ) = E_p[x(p) y(p + δ)ᵀ]`` (channels x channels) over every
position where both ends lie in the map, and the entry of taps ``t, t'`` is
``R(pos(t') − pos(t))``. That costs ``(2k−1)²·C²`` per position instead of ``k⁴·C²``, but treats
the feature map as stationary: borders, padding and strides are not modelled. Measured on the
digits models of ``benchmarks/accuracy.py`` (small maps, centred digits), that error is too large
for the narrow convs, which is why patches are the rule.
"""

from __future__ import annotations

import numpy as np

from spa.consumers import Consumer
from spa.graph import ModelContext, attr

#: Multiply-adds per moment matrix (rows x cols²) ...
H_MACS = 2e10
#: ... within these many rows.
MAX_ROWS = 16384
#: Positions for offset moments.
MAX_POSITIONS = 32768
#: Convs with more columns than this use offset moments.
PATCH_MAX_COLS = 2048


def row_count(cols: int, available: int) -> int:
    """Rows for a moment matrix of ``cols`` columns when ``available`` exist."""
    return int(max(1, min(available, MAX_ROWS, max(H_MACS // max(cols * cols, 1), 2 * cols))))


def shrink(h: np.ndarray, n: int) -> np.ndarray:
    """``h`` estimated from ``n`` rows, shrunk toward its diagonal when there are fewer than 4
    rows per column (the raw estimate would be near singular and a refit would overfit it).
    The means (last row and column) are kept."""
    cols = h.shape[0] - 1
    if n >= 4 * cols:
        return h
    lam = min(0.5, cols / max(4.0 * n, 1.0))
    diag = np.diag(np.diag(h))
    diag[-1, :-1], diag[:-1, -1] = h[-1, :-1], h[:-1, -1]
    return (1 - lam) * h + lam * diag


def _pick(arrays: list[np.ndarray], per_sample: int) -> np.ndarray:
    """Samples (axis 0) of the concatenated batches, evenly spread, at most MAX_POSITIONS positions."""
    total = sum(len(a) for a in arrays)
    want = max(1, min(total, MAX_POSITIONS // max(per_sample, 1)))
    idx = np.unique(np.linspace(0, total - 1, want).round().astype(np.int64))
    starts = np.cumsum([0] + [len(a) for a in arrays])
    parts = []
    for k, a in enumerate(arrays):
        sel = idx[(idx >= starts[k]) & (idx < starts[k + 1])] - starts[k]
        if sel.size:
            parts.append(a[sel])
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _crop(x: np.ndarray) -> np.ndarray:
    """Crop the spatial axes (2:) around the centre to at most MAX_POSITIONS positions."""
    spatial = x.shape[2:]
    size = int(np.prod(spatial, dtype=np.int64))
    if size <= MAX_POSITIONS:
        return x
    f = (MAX_POSITIONS / size) ** (1.0 / len(spatial))
    index = [slice(None), slice(None)]
    for s in spatial:
        keep = max(1, int(s * f))
        lo = (s - keep) // 2
        index.append(slice(lo, lo + keep))
    return x[tuple(index)]


def _augment(m: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    out = np.empty((m.shape[0] + 1, m.shape[1] + 1))
    out[:-1, :-1] = m
    out[:-1, -1] = mx
    out[-1, :-1] = my
    out[-1, -1] = 1.0
    return out


def second_moment(c: Consumer, ctx: ModelContext, xs: list[np.ndarray],
                  ys: list[np.ndarray] | None = None) -> tuple[np.ndarray, int] | None:
    """``E[x̃ ỹᵀ]`` over ``c``'s columns (``ys`` defaults to ``xs``) and the number of positions
    used; None when the activations do not match the consumer's columns."""
    if c.kind == "conv" and c.cols > PATCH_MAX_COLS:
        return _offset_moment(c, ctx, xs, ys)
    x = _rows(c, ctx, xs)
    if x is None:
        return None
    y = x if ys is None else _rows(c, ctx, ys)
    if y is None or y.shape != x.shape:
        return None
    n = x.shape[0]
    m = (x.T @ y).astype(np.float64) / n
    return _augment(m, x.mean(axis=0, dtype=np.float64), y.mean(axis=0, dtype=np.float64)), n


def _rows(c: Consumer, ctx: ModelContext, xs: list[np.ndarray]) -> np.ndarray | None:
    """Rows of ``c``'s input columns, float32, at positions that depend only on the shapes."""
    from spa.stats import conv_patches, conv_windows

    if c.kind != "conv":
        k = xs[0].shape[-1] if xs[0].ndim else 0
        if k != c.cols:
            return None
        flat = [a.reshape(-1, k) for a in xs]
        total = sum(len(f) for f in flat)
        pick = np.unique(np.linspace(0, total - 1, row_count(c.cols, total)).round().astype(np.int64))
        return np.concatenate(flat)[pick].astype(np.float32, copy=False)
    wshape = ctx.shape(c.weight)
    if wshape is None or xs[0].ndim != len(wshape) or xs[0].shape[1] * int(np.prod(wshape[2:])) != c.cols:  # type: ignore[arg-type]
        return None
    kshape = tuple(int(k) for k in wshape[2:])  # type: ignore[arg-type]
    per_sample = int(np.prod(conv_windows(xs[0][:1], c.node, kshape).shape[2:2 + len(kshape)], dtype=np.int64))
    samples = sum(len(a) for a in xs)
    rows = row_count(c.cols, per_sample * samples)
    parts = [conv_patches(a, c.node, kshape, -(-rows * len(a) // samples), np.random.default_rng([b, rows]))
             for b, a in enumerate(xs)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _offset_moment(c: Consumer, ctx: ModelContext, xs: list[np.ndarray],
                 ys: list[np.ndarray] | None) -> tuple[np.ndarray, int] | None:
    wshape = ctx.shape(c.weight)
    if wshape is None:
        return None
    kshape = tuple(int(k) for k in wshape[2:])  # type: ignore[arg-type]
    d = len(kshape)
    if xs[0].ndim != d + 2:
        return None
    channels = xs[0].shape[1]
    taps = int(np.prod(kshape, dtype=np.int64))
    if channels * taps != c.cols:
        return None
    per_sample = int(np.prod(xs[0].shape[2:], dtype=np.int64))
    x = _crop(_pick(xs, per_sample))
    y = x if ys is None else _crop(_pick(ys, per_sample))
    xt = np.ascontiguousarray(np.moveaxis(x, 1, 0), dtype=np.float32)  # (C, B, *S)
    yt = xt if ys is None else np.ascontiguousarray(np.moveaxis(y, 1, 0), dtype=np.float32)
    dil = [int(v) for v in attr(c.node, "dilations", [1] * d)]  # type: ignore[union-attr]
    pos = np.indices(kshape).reshape(d, -1).T * np.array(dil)  # (T, d), C order like the weight
    memo: dict[tuple[int, ...], np.ndarray] = {}

    def offset(delta: tuple[int, ...]) -> np.ndarray:
        if delta in memo:
            return memo[delta]
        if ys is None and tuple(-v for v in delta) in memo:
            return memo[tuple(-v for v in delta)].T
        a_idx: list[slice] = [slice(None), slice(None)]
        b_idx: list[slice] = [slice(None), slice(None)]
        for s, v in zip(xt.shape[2:], delta):
            a_idx.append(slice(0, max(s - v, 0)) if v >= 0 else slice(-v, s))
            b_idx.append(slice(v, s) if v >= 0 else slice(0, max(s + v, 0)))
        a = xt[tuple(a_idx)].reshape(xt.shape[0], -1)
        b = yt[tuple(b_idx)].reshape(yt.shape[0], -1)
        if a.shape[1] == 0:  # the taps never overlap inside the map: uncorrelated
            r = np.outer(mx, my)
        else:
            r = (a @ b.T).astype(np.float64) / a.shape[1]
        memo[delta] = r
        return r

    mx = xt.reshape(xt.shape[0], -1).mean(axis=1, dtype=np.float64)
    my = mx if ys is None else yt.reshape(yt.shape[0], -1).mean(axis=1, dtype=np.float64)
    m = np.empty((channels, taps, channels, taps))
    for t in range(taps):
        for u in range(taps):
            m[:, t, :, u] = offset(tuple(int(v) for v in pos[u] - pos[t]))
    n = int(np.prod(xt.shape[1:], dtype=np.int64))
    return _augment(m.reshape(channels * taps, channels * taps), np.repeat(mx, taps), np.repeat(my, taps)), n
