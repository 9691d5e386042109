"""Synthetic model inputs for data-free statistics.

Float inputs that a convolution reads (directly or through a Transpose) are drawn as random
fields with the power spectrum of natural images: amplitude ``∝ 1/|f|`` over the spatial axes
(Field 1987; van der Schaaf and van Hateren 1996), each sample and channel standardised to mean
0 and variance 1. Neighbouring pixels of such a field are strongly correlated, as in real images,
whereas white noise would make every feature map spatially rough. Other float inputs are
``N(0, 1)``; token ids, positions, masks, KV caches, integer and boolean inputs are drawn as in
:func:`spa.model.runtime.random_inputs`, from the value domains :mod:`spa.model.inputs` derives. An input
whose values SPA cannot derive takes the ``--inputs`` array when one is given.

Symbolic sizes: axis 0 is the batch; other symbolic axes take the typical sizes given
(:mod:`spa.model.sizes`, valid for the model's strides), else :data:`SPATIAL_SIZE` when spatial and 1
otherwise (a KV cache's past length 0: the prefill step).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from spa.model.graph import ModelContext, attr_ints
from spa.model.inputs import derive_domains, draw, resolve_shapes, supplied

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
            perm = attr_ints(node, "perm")
            if perm is None or len(perm) != rank:
                continue
            if any(n.op_type == "Conv" and n.input[0] == node.output[0] for n in ctx.consumers.get(node.output[0], ())):
                return tuple(perm[2:])
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


def synthetic_batches(ctx: ModelContext, n_batches: int, batch: int, seed: int = 0,
                      shapes: dict[str, list[int]] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """``n_batches`` feeds of ``batch`` samples each (seeded, reproducible); ``shapes`` gives the
    typical input shapes (:mod:`spa.model.sizes`, their batch aside) that other dynamic sizes take."""
    domains = derive_domains(ctx.model)
    axes = {d.name: spatial_axes(ctx, d.name, len(d.dims)) if d.kind == "float" else () for d in domains.inputs}
    typical = shapes or {}
    sizes = resolve_shapes(domains, None, lambda d, k: batch if k == 0 else typical[d.name][k] if d.name in typical
                           else SPATIAL_SIZE if k in axes[d.name] else 1)
    past = domains.past_in(sizes)
    given = supplied()  # real values (--inputs) for the inputs whose valid values SPA cannot derive
    for b in range(n_batches):
        rng = np.random.default_rng([seed, b])
        feeds: dict[str, np.ndarray] = {}
        for d in domains.inputs:
            real = given.fit(d.name, sizes[d.name]) if given is not None and not d.derived and d.name in given.arrays \
                else None
            if real is not None:
                feeds[d.name] = real
            elif d.kind == "float" and axes[d.name]:
                feeds[d.name] = pink_field(rng, sizes[d.name], axes[d.name]).astype(d.dtype)
            else:
                feeds[d.name] = draw(d, sizes[d.name], rng, past)
        yield feeds
