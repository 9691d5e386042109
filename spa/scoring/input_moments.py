"""Rows of a consumer's input columns, and their second moments, from activations.

A row is one input vector of the consumer's ``y = W x + b``: a Gemm/MatMul input row, or a Conv's
unfolded patch exactly as the Conv reads it (padding, strides, dilations; an input channel is a
block of kernel-tap columns). Rows are drawn at positions that depend only on the shapes, so the
rows of the original and of the pruned model's activations pair up sample by sample.

A row costs ``cols²`` multiply-adds in a moment matrix, so the number of rows is set by a budget
of :data:`H_MACS` per matrix, within ``[cols / 2, MAX_ROWS]`` and what the activations hold.
With fewer than ``4 · cols`` rows, :func:`shrink` regularises the estimate.
"""

from __future__ import annotations

import numpy as np

from spa.analysis.consumers import Consumer
from spa.model.graph import ModelContext
from spa.scoring.obs import LowRankH, moment, shrink, shrink_weight
from spa.scoring.stats import conv_patches, conv_windows, static_dims

#: Multiply-adds per moment matrix (rows x cols²) ...
H_MACS = 1e10
#: ... within this many rows.
MAX_ROWS = 16384


def row_count(cols: int, available: int) -> int:
    """Rows for a moment matrix of ``cols`` columns when ``available`` exist."""
    return int(max(1, min(available, MAX_ROWS, max(H_MACS // max(cols * cols, 1), cols // 2))))



def shrunk_moment(x: np.ndarray) -> np.ndarray | LowRankH:
    """``shrink(moment(x), len(x))``, as a :class:`~spa.scoring.obs.LowRankH` when ``x`` has far fewer
    rows than columns (then it is ``diag + rank(rows + 2)`` and inverts in ``D²·rows``)."""
    n, cols = x.shape
    lam = shrink_weight(cols, n)
    if not lam or n + 2 >= cols // 2:
        return shrink(moment(x), n)
    xa = np.empty((cols + 1, n))
    xa[:-1] = x.T
    xa[-1] = 1.0
    d = np.einsum("ij,ij->i", xa, xa) / n
    m = np.append(x.mean(axis=0, dtype=np.float64), 0.0)
    e = np.zeros(cols + 1)
    e[-1] = 1.0
    u = np.concatenate([xa * np.sqrt((1 - lam) / n), np.sqrt(lam / 2) * np.stack([m + e, m - e], axis=1)], axis=1)
    return LowRankH(lam * d, u, np.concatenate([np.ones(n), [1.0, -1.0]]))



def input_rows(c: Consumer, ctx: ModelContext, xs: list[np.ndarray]) -> np.ndarray | None:
    """Rows (float32) of ``c``'s input columns from its input activations ``xs`` (one array per
    batch); None when they do not match the consumer's columns."""

    if c.kind != "conv":
        k = xs[0].shape[-1] if xs[0].ndim else 0
        if k != c.cols:
            return None
        flat = [a.reshape(-1, k) for a in xs]
        total = sum(len(f) for f in flat)
        pick = np.unique(np.linspace(0, total - 1, row_count(c.cols, total)).round().astype(np.int64))
        return np.concatenate(flat)[pick].astype(np.float32, copy=False)
    wshape = ctx.shape(c.weight)
    kshape = static_dims(wshape[2:]) if wshape is not None else None
    if wshape is None or kshape is None or xs[0].ndim != len(wshape) or xs[0].shape[1] * int(np.prod(kshape)) != c.cols:
        return None
    per_sample = int(np.prod(conv_windows(xs[0][:1], c.node, kshape).shape[2:2 + len(kshape)], dtype=np.int64))
    samples = sum(len(a) for a in xs)
    rows = row_count(c.cols, per_sample * samples)
    parts = [conv_patches(a, c.node, kshape, -(-rows * len(a) // samples), np.random.default_rng([b, rows]))
             for b, a in enumerate(xs)]
    return np.concatenate(parts).astype(np.float32, copy=False)
