"""``obspa``: Optimal-Brain-Surgeon group pruning with weight compensation.

Scores come from greedy block OBS over every consumer of the group (:mod:`spa.obs`). Consumers
are the Conv, Gemm and MatMul layers that read the group's channels. After selection, every
consumer's surviving weights and bias are refitted in closed form, so the output is a dense
model that needs no fine-tuning.

Statistics (:mod:`spa.stats`):

* ``moments`` (no data; the default without ``--calib``): channel samples pushed through the
  model's own weights, with the BatchNorms fixing each channel's marginal and a spatial prior for
  kernel taps; consumers whose inputs it cannot follow use synthetic activations.
* ``synthetic`` (no data): ``N(0, 1)`` inputs run through onnxruntime.
* ``data``: the calibration inputs given with ``--calib``, the default when they are given.

A group with no usable consumer (its readers are ConvTranspose, or share a weight) falls back
to ``l2`` scores and is not compensated. The choice is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from spa.criteria.base import Criterion
from spa.criteria.l2 import L2Criterion

from spa.consumers import Consumer, find_consumers
from spa.errors import InvalidArgumentError
from spa.graph import ModelContext
from spa.groups import Group
from spa.obs import ObsLayer, refit, removal_scores

log = logging.getLogger(__name__)

STATS = ("auto", "moments", "synthetic", "data")


@dataclass
class Compensation:
    """New values, in the *original* shapes, for consumer weights and biases."""

    weights: dict[str, np.ndarray] = field(default_factory=dict)
    #: node name -> full-length bias, for consumers whose bias is not an initializer of their own
    new_biases: dict[str, np.ndarray] = field(default_factory=dict)
    #: bias initializer -> full-length values, updated in place
    biases: dict[str, np.ndarray] = field(default_factory=dict)


class OBSPACriterion(Criterion):
    name = "obspa"
    compensates = True

    def __init__(self, seed: int = 0, stats: str = "auto", calib: dict[str, np.ndarray] | None = None,
                 synthetic_batches: int = 8, batch: int = 16) -> None:
        super().__init__(seed)
        if stats not in STATS:
            raise InvalidArgumentError(f"--stats must be one of {', '.join(STATS)}, got '{stats}'")
        if stats == "data" and calib is None:
            raise InvalidArgumentError("--stats data needs calibration inputs (--calib)")
        self.stats = ("data" if calib is not None else "moments") if stats == "auto" else stats
        self.calib = calib
        self.synthetic_batches = synthetic_batches
        self.batch = batch
        self._layers: dict[int, list[tuple[Consumer, ObsLayer]]] = {}

    # ---- statistics ---------------------------------------------------------------------
    def prepare(self, groups: list[Group], ctx: ModelContext) -> None:
        """Find every group's consumers and their ``H`` (one onnxruntime pass for all)."""
        consumers = {g.id: find_consumers(g, ctx) for g in groups}
        flat = [c for cs in consumers.values() for c in cs]
        stats = self._statistics(flat, ctx)
        for g in groups:
            layers = []
            for c in consumers[g.id]:
                st = stats.get(c.node.name)
                if st is None:
                    log.debug("obspa: no statistics for %s; it does not take part", c.node.name)
                    continue
                w = np.concatenate([c.matrix(ctx), c.bias_vector(ctx)[:, None]], axis=1)
                if isinstance(st, tuple):
                    layers.append((c, ObsLayer(w, c.col_unit, mean=st[0], var=st[1])))
                elif callable(st):
                    layers.append((c, ObsLayer(w, c.col_unit, h_factory=st)))
                else:
                    layers.append((c, ObsLayer(w, c.col_unit, h=st)))
            self._layers[g.id] = layers
        log.info("obspa: %d consumers, statistics from %s", len(flat), self.stats)

    def _statistics(self, consumers: list[Consumer], ctx: ModelContext) -> dict[str, object]:
        """Per consumer: ``(mean, var)`` of its columns (moments) or the full ``H`` (data)."""
        if not consumers:
            return {}
        if self.stats == "moments":
            from spa.stats import MomentEstimator, consumer_statistics

            est = MomentEstimator(ctx, seed=self.seed)
            out: dict[str, object] = {}
            for c in consumers:
                st = consumer_statistics(c, est)
                if st is not None:
                    out[c.node.name] = st
            rest = [c for c in consumers if c.node.name not in out]
            if rest:
                # Inputs the moment model cannot follow (e.g. after a LayerNorm): synthetic
                # activations, still without data.
                from spa.stats import activation_H

                log.info("obspa: %d consumers use synthetic activations", len(rest))
                out.update(activation_H(rest, ctx, self._synthetic_batches(ctx), seed=self.seed))
            return out
        from spa.stats import activation_H

        return activation_H(consumers, ctx, self._batches(ctx), seed=self.seed)

    def _batches(self, ctx: ModelContext) -> Iterator[dict[str, np.ndarray]]:
        if self.stats == "data":
            assert self.calib is not None
            n = len(next(iter(self.calib.values())))
            for i in range(0, n, self.batch):
                yield {k: v[i : i + self.batch] for k, v in self.calib.items()}
            return
        yield from self._synthetic_batches(ctx)

    def _synthetic_batches(self, ctx: ModelContext) -> Iterator[dict[str, np.ndarray]]:
        from spa.runtime import random_inputs

        for b in range(self.synthetic_batches):
            yield random_inputs(ctx.model, seed=self.seed * 1000 + b, batch=self.batch)

    # ---- scoring and compensation -------------------------------------------------------
    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        if group.id not in self._layers:
            self.prepare([group], ctx)
        layers = [layer for _, layer in self._layers[group.id]]
        if not layers:
            log.debug("obspa: group %d has no usable consumer; l2 scores", group.id)
            return L2Criterion(self.seed).score(group, ctx)
        return removal_scores(layers, group.n_units)

    def compensate(self, groups: list[Group], kept_units: dict[int, np.ndarray], ctx: ModelContext) -> Compensation:
        comp = Compensation()
        for g in groups:
            units = kept_units.get(g.id)
            if units is None or len(units) == g.n_units:
                continue
            for c, layer in self._layers.get(g.id, []):
                new = refit(layer, units)
                comp.weights[c.weight] = c.to_weight(ctx, new[:, :-1])
                bias = new[:, -1]
                if c.kind in ("matmul", "matmul_t") and not (c.bias is not None and c.own_bias):
                    continue  # no bias of its own to write: the weight refit alone
                if c.bias is not None and c.own_bias and ctx.array(c.bias).size == bias.size:
                    current = ctx.array(c.bias)
                    comp.biases[c.bias] = bias.astype(current.dtype).reshape(current.shape)
                else:
                    comp.new_biases[c.node.name] = bias
        return comp
