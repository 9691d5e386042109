"""Synthetic model inputs for data-free statistics.

Float inputs that a convolution reads (directly or through a Transpose) are drawn as random
fields with the power spectrum of natural images: amplitude ``∝ 1/|f|`` over the spatial axes
(Field 1987; van der Schaaf and van Hateren 1996), each sample and channel standardised to mean
0 and variance 1. Neighbouring pixels of such a field are strongly correlated, as in real images,
whereas white noise would make every feature map spatially rough. Other float inputs are
``N(0, 1)``; integer and boolean inputs are drawn as in :func:`spa.runtime.random_inputs`.

Symbolic sizes: axis 0 is the batch; other symbolic axes take the typical sizes given
(:mod:`spa.sizes`, valid for the model's strides), else :data:`SPATIAL_SIZE` when spatial and 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from spa.errors import SpaError
from spa.graph import ModelContext, attr
from spa.runtime import _NP_TYPES, input_specs

#: Size given to a symbolic spatial axis of an image input.
SPATIAL_SIZE = 64


def spatial_axes(ctx: ModelContext, name: str, rank: int) -> tuple[int, ...]:
    """The spatial axes of input ``name`` when a Conv reads it (channel-first, or behind a
    Transpose that makes it so), else ``()``."""
    if rank < 3:
        return ()
    for node in ctx.consumers.get(name, ()):
        if node.op_type == "Conv" and node.input[0] == name:
            return tuple(range(2, rank))
        if node.op_type == "Transpose":
            perm = attr(node, "perm")
            if perm is None or len(perm) != rank:  # type: ignore[arg-type]
                continue
            if any(n.op_type == "Conv" and n.input[0] == node.output[0] for n in ctx.consumers.get(node.output[0], ())):
                return tuple(int(p) for p in list(perm)[2:])  # type: ignore[arg-type]
    return ()


def pink_field(rng: np.random.Generator, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """Gaussian fields with amplitude spectrum ``1/|f|`` over ``axes``, standardised per slice."""
    white = rng.standard_normal(shape)
    spec = np.fft.fftn(white, axes=axes)
    freq = np.zeros([shape[a] for a in axes])
    for k, a in enumerate(axes):
        f = np.fft.fftfreq(shape[a])
        freq = freq + (f.reshape([-1 if j == k else 1 for j in range(len(axes))])) ** 2
    radius = np.sqrt(freq)
    radius.flat[0] = np.inf  # no DC component: the field has mean 0
    gain = 1.0 / radius
    full = [1] * len(shape)
    for a in axes:
        full[a] = shape[a]
    field = np.real(np.fft.ifftn(spec * gain.reshape(full), axes=axes))
    field -= field.mean(axis=axes, keepdims=True)
    std = field.std(axis=axes, keepdims=True)
    return field / np.where(std > 0, std, 1.0)


def input_shape(dims: list[int | str | None], batch: int, axes: tuple[int, ...],
                given: list[int] | None = None) -> tuple[int, ...]:
    """A concrete shape: static sizes kept, symbolic ones from ``batch`` on axis 0 and from
    ``given`` (the typical shape, :mod:`spa.sizes`) or else :data:`SPATIAL_SIZE` elsewhere."""
    if given is not None:
        return tuple(d if isinstance(d, int) and d > 0 else (batch if k == 0 else int(given[k]))
                     for k, d in enumerate(dims))
    return tuple(d if isinstance(d, int) and d > 0 else (batch if k == 0 else SPATIAL_SIZE if k in axes else 1)
                 for k, d in enumerate(dims))


def synthetic_batches(ctx: ModelContext, n_batches: int, batch: int, seed: int = 0,
                      shapes: dict[str, list[int]] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """``n_batches`` feeds of ``batch`` samples each (seeded, reproducible); ``shapes`` gives the
    typical input shapes (their batch aside) that dynamic sizes take."""
    specs = input_specs(ctx.model)
    for b in range(n_batches):
        rng = np.random.default_rng([seed, b])
        feeds: dict[str, np.ndarray] = {}
        for name, dims, et in specs:
            axes = spatial_axes(ctx, name, len(dims))
            shape = input_shape(dims, batch, axes, (shapes or {}).get(name))
            dtype = _NP_TYPES.get(et)
            if dtype is None:
                raise SpaError(f"input '{name}' has element type {onnx.TensorProto.DataType.Name(et)}, "
                               "which SPA cannot generate; give --calib data")
            if np.issubdtype(dtype, np.floating):
                x = pink_field(rng, shape, axes) if axes else rng.standard_normal(shape)
                feeds[name] = x.astype(dtype)
            elif dtype is np.bool_:
                feeds[name] = rng.random(shape) < 0.5
            else:
                feeds[name] = rng.integers(0, 10, size=shape).astype(dtype)
        yield feeds
