"""``obspa``: Optimal-Brain-Surgeon group pruning with weight compensation.

Scores come from greedy block OBS over every consumer of the group (:mod:`spa.scoring.obs`). Consumers
are the Conv, Gemm and MatMul layers that read the group's channels. After selection, every
consumer's surviving weights and bias are refitted in closed form, so the output is a dense
model that needs no fine-tuning.

Statistics:

* ``synthetic`` (no data; the default without ``--calib``): seeded synthetic inputs with the
  spectrum of natural images (:mod:`spa.scoring.synthetic`) run through onnxruntime, every
  BatchNormalization normalising with the batch's own statistics, so each layer sees inputs in
  the range it was trained for.
* ``data``: the calibration inputs given with ``--calib``, the default when they are given.
* ``moments`` (no data): channel samples pushed through the model's own weights
  (:mod:`spa.scoring.stats`), with independent compensation. Kept for comparison.

Compensation is **sequential** for ``synthetic`` and ``data`` (:mod:`spa.scoring.worlds`): consumers are
refitted in topological order, each on its input in the *pruned* model (the layers before it
already pruned and compensated) against its output in the original model, so every layer also
corrects what the layers before it lost. Consumers of prunable groups that keep all their
units are refitted too when their input changed.

A group with no usable consumer (its readers are ConvTranspose, or share a weight) falls back
to ``l2`` scores and is not compensated. The choice is logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
from spa.criteria.base import Criterion
from spa.criteria.compensation import Compensation
from spa.criteria.l2 import L2Criterion

from spa.analysis.consumers import Consumer, find_consumers
from spa.analysis.groups import Group
from spa.errors import InvalidArgumentError, SpaError
from spa.model.graph import ModelContext
from spa.model.metrics import measure
from spa.model.runtime import random_inputs, runtime_errors
from spa.model.sizes import with_batch
from spa.scoring.calib import batches
from spa.scoring.guarded_refit import HOLDOUT, guarded_refit
from spa.scoring.input_moments import input_rows, shrunk_moment
from spa.scoring.obs import LowRankH, ObsLayer, refit, removal_scores
from spa.scoring.stats import MomentEstimator, activation_H, consumer_statistics
from spa.scoring.synthetic import synthetic_batches
from spa.scoring.worlds import PrunedWorld, Stop, Worlds, peak_activation_bytes, twin_supported

log = logging.getLogger(__name__)

STATS = ("auto", "moments", "synthetic", "data")
#: Synthetic samples: as many as cost about this many MACs in one forward pass ...
SAMPLE_MACS = 6.4e10
#: ... and whose cached activations (two worlds) fit in this many bytes, within these bounds.
SAMPLE_BYTES = 1 << 29
MIN_SAMPLES, MAX_SAMPLES = 16, 256
#: A consumer's input statistics: ``(mean, var)`` per column (independent features), a function
#: that builds the augmented ``H`` on demand, or ``H`` itself.
ColumnStats = tuple[np.ndarray, np.ndarray] | Callable[[], np.ndarray] | np.ndarray


def _run_failures() -> tuple[type[BaseException], ...]:
    """What running (a slice of) the model can raise that OBSPA survives: SPA's own errors
    (inputs that cannot be generated) and onnxruntime's failures."""
    return (SpaError, *runtime_errors())


def _finite_or_none(comp: Compensation) -> Compensation | None:
    """``comp``, or None (no compensation, with a warning) when a value it computed is not finite:
    weights of extreme magnitude (a damaged file) overflow the refit."""
    for values in (comp.weights, comp.new_biases, comp.biases):
        if any(not np.all(np.isfinite(v)) for v in values.values()):
            log.warning("obspa: the refitted weights are not finite (extreme weight values?); not compensated")
            return None
    return comp


def bias_slot(c: Consumer) -> bool:
    """Whether a refitted bias can be written for ``c`` (a MatMul needs an Add of its own)."""
    return c.kind in ("conv", "gemm") or (c.bias is not None and c.own_bias)


def augmented(c: Consumer, ctx: ModelContext) -> np.ndarray:
    """``[W | b]`` of a consumer, float64."""
    return np.concatenate([c.matrix(ctx), c.bias_vector(ctx)[:, None]], axis=1)


def memory_cap(ctx: ModelContext) -> int:
    """Most samples whose cached activations in two worlds fit in :data:`SAMPLE_BYTES`
    (at least :data:`MIN_SAMPLES`)."""

    return int(max(MIN_SAMPLES, SAMPLE_BYTES // (2 * max(peak_activation_bytes(ctx), 1))))


def sample_count(ctx: ModelContext) -> int:
    """How many synthetic samples: bounded by compute (:data:`SAMPLE_MACS`) and memory
    (:func:`memory_cap`), within [:data:`MIN_SAMPLES`, :data:`MAX_SAMPLES`]."""

    macs = max(measure(ctx, with_size=False).macs, 1)
    return int(min(MAX_SAMPLES, max(MIN_SAMPLES, min(SAMPLE_MACS // macs, memory_cap(ctx)))))


def held_out_drift(outputs: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
                   feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per float output, ``max|pruned − original| / max|original|`` over the last quarter of the
    samples (the rows every refit held out), from :meth:`Worlds.finish`."""
    sizes = [len(next(iter(f.values()))) if f else 0 for f in feeds]
    starts = np.cumsum([0, *sizes[:-1]])
    # the first batch that starts in the last quarter (the last batch if none does)
    first = min(int(np.searchsorted(starts, sum(sizes) - round(sum(sizes) * HOLDOUT))), len(sizes) - 1)
    drift: dict[str, float] = {}
    for name in outputs[0][0] if outputs else ():
        pairs = [(o[name], p[name]) for o, p in outputs[first:] if name in o and name in p]
        if not pairs or pairs[0][0].dtype.kind != "f":
            continue
        diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0 for a, b in pairs)
        scale = max(float(np.max(np.abs(a))) if a.size else 0.0 for a, _ in pairs)
        drift[name] = diff / scale if scale > 0 else diff
    return drift


class OBSPACriterion(Criterion):
    """Scores a unit by greedy block OBS over the group's consumers (Conv, Gemm, MatMul) and refits
    their surviving weights and biases in closed form.

    Statistics are ``synthetic`` (the default without ``--calib``), ``data`` (the default with it) or
    ``moments``. Refuses an unknown
    ``--stats`` and ``--stats data`` without ``--calib``. A group with no usable consumer (read by a
    ConvTranspose, or through a shared weight) falls back to ``l2`` and is not compensated; when the
    model cannot be run for statistics the remaining groups fall back to ``l2`` as well (logged).
    """

    name = "obspa"
    compensates = True
    options = ("stats", "calib")

    def __init__(self, seed: int = 0, stats: str = "auto", calib: dict[str, np.ndarray] | None = None,
                 samples: int | None = None, batch: int = 32) -> None:
        super().__init__(seed)
        if stats not in STATS:
            raise InvalidArgumentError(f"--stats must be one of {', '.join(STATS)}, got '{stats}'")
        if stats == "data" and calib is None:
            raise InvalidArgumentError("--stats data needs calibration inputs (--calib)")
        self.stats = ("data" if calib is not None else "synthetic") if stats == "auto" else stats
        self.calib = calib
        self.samples = samples
        self.batch = batch
        self._consumers: dict[int, list[Consumer]] = {}
        self._n_units: dict[int, int] = {}
        self._failed = False  # the model could not be run for statistics
        self._scores: dict[int, np.ndarray | None] = {}
        self._layers: dict[int, list[tuple[Consumer, ObsLayer]]] = {}  # moments only

    # ---- consumers and inputs -----------------------------------------------------------
    def prepare(self, groups: list[Group], ctx: ModelContext) -> None:
        """Find every group's consumers (statistics are taken when first needed)."""
        new = [g for g in groups if g.id not in self._consumers]
        for g in new:
            self._consumers[g.id] = find_consumers(g, ctx)
            self._n_units[g.id] = g.n_units
        if self._uses_layers and new:
            self._prepare_layers(new, ctx)
        log.info("obspa: %d consumers, statistics from %s",
                 sum(len(cs) for cs in self._consumers.values()), self.stats)

    def _feeds(self, ctx: ModelContext) -> list[dict[str, np.ndarray]]:
        if self.stats == "data":
            assert self.calib is not None
            n = len(next(iter(self.calib.values())))
            cap = memory_cap(ctx)
            calib = self.calib
            if n > cap:  # both worlds cache every sample's activations: bounded memory
                pick = np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))
                log.info("obspa: using %d of %d calibration samples (memory budget)", len(pick), n)
                calib, n = {k: v[pick] for k, v in calib.items()}, len(pick)
            return list(batches(ctx.model, calib, "--calib"))  # a model's static batch is respected

        n = self.samples or sample_count(ctx)
        log.info("obspa: %d synthetic samples", n)
        return list(synthetic_batches(ctx, math.ceil(n / self.batch), min(self.batch, n), seed=self.seed,
                                      shapes=self.input_shapes))

    # ---- scoring ------------------------------------------------------------------------
    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        if group.id not in self._consumers:
            self.prepare([group], ctx)
        if self._uses_layers:
            layers = [layer for _, layer in self._layers[group.id]]
            scores = removal_scores(layers, group.n_units) if layers else None
        else:
            if group.id not in self._scores:
                self._score_pending(ctx)
            scores = self._scores[group.id]
        if scores is not None and not np.all(np.isfinite(scores)):
            # Weights of extreme magnitude (1e35: a damaged file) overflow the Hessian statistics.
            log.warning("obspa: the scores of group %d are not finite; it uses l2 scores", group.id)
            scores = None
        if scores is None:
            log.debug("obspa: group %d has no usable consumer; l2 scores", group.id)
            return L2Criterion(self.seed).score(group, ctx)
        return scores

    def _score_pending(self, ctx: ModelContext) -> None:
        """One pass of the original world over every group not scored yet: each consumer's
        ``H`` is taken at its stop, and a group is scored (then its ``H`` dropped) as soon as
        all its consumers are in."""

        t0 = time.perf_counter()
        todo = [gid for gid in self._consumers if gid not in self._scores]
        owner = {c.node.name: gid for gid in todo for c in self._consumers[gid]}
        left = {gid: len(self._consumers[gid]) for gid in todo}
        pending: dict[int, list[ObsLayer]] = {gid: [] for gid in todo}
        units = {gid: self._n_units[gid] for gid in todo}
        for gid in todo:
            if not left[gid]:
                self._scores[gid] = None
        flat = [c for gid in todo for c in self._consumers[gid]]
        failures = _run_failures()
        try:
            self._score_stops(Worlds(ctx, flat, self._feeds(ctx), batch_stats=self.stats == "synthetic").stops(),
                              owner, left, pending, units, ctx)
        except failures as exc:
            # onnxruntime cannot run a slice of this model (or its inputs cannot be generated):
            # rank the rest by l2 and leave the weights as they are, rather than fail.
            log.warning("obspa: the model could not be run for statistics (%s); the remaining groups use l2 "
                        "scores and are not compensated", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            self._failed = True
            for gid in todo:
                self._scores.setdefault(gid, None)
        log.info("obspa: scored %d groups in %.1f s", len(todo), time.perf_counter() - t0)

    def _score_stops(self, stops: Iterator[Stop], owner: dict[str, int], left: dict[int, int],
                     pending: dict[int, list[ObsLayer]], units: dict[int, int], ctx: ModelContext) -> None:

        for stop in stops:
            c = stop.consumer
            gid = owner[c.node.name]
            rows = input_rows(c, ctx, stop.x)
            if rows is not None:
                h = shrunk_moment(rows)
                pending[gid].append(ObsLayer(augmented(c, ctx), c.col_unit, **(
                    {"lowrank": h} if isinstance(h, LowRankH) else {"h": h})))
            else:
                log.debug("obspa: %s: activations do not match its columns; it does not take part", c.node.name)
            del rows
            left[gid] -= 1
            if left[gid] == 0:
                layers = pending.pop(gid)
                self._scores[gid] = removal_scores(layers, units[gid]) if layers else None

    # ---- compensation -------------------------------------------------------------------
    def compensate(self, groups: list[Group], kept_units: dict[int, np.ndarray],
                   ctx: ModelContext) -> Compensation | None:
        """New weights for the consumers; None (no compensation: a plain masked plan) when the
        model could not be run for statistics."""
        if self._failed:
            return None
        by_id = {g.id: g for g in groups}
        pruned = {gid: units for gid, units in kept_units.items()
                  if gid in by_id and len(units) < by_id[gid].n_units}
        if not pruned:
            return Compensation()
        if self._uses_layers:
            return _finite_or_none(self._compensate_independent(pruned, ctx))

        if not twin_supported(ctx):
            log.info("obspa: the model has subgraphs (If/Loop/Scan); compensation is not sequential")
        failures = _run_failures()
        try:
            return _finite_or_none(self._compensate_sequential(by_id, kept_units, pruned, ctx))
        except failures as exc:
            log.warning("obspa: the model could not be run for compensation (%s); it is not compensated",
                        str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            return None

    def _compensate_sequential(self, by_id: dict[int, Group], kept_units: dict[int, np.ndarray],
                               pruned: dict[int, np.ndarray], ctx: ModelContext) -> Compensation:
        """Refit every consumer in topological order on its pruned-world input (:mod:`spa.scoring.worlds`)."""

        t0 = time.perf_counter()
        masks: dict[str, list[tuple[int, np.ndarray]]] = {}
        for gid, units in pruned.items():
            g = by_id[gid]
            for t, a in g.params(ctx):
                removed = np.flatnonzero(~np.isin(g.unit_of[(t, a)], units))
                if removed.size:
                    masks.setdefault(t, []).append((a, removed))
        consumers = [c for gid in self._consumers if gid in kept_units for c in self._consumers[gid]]
        owner = {c.node.name: gid for gid in self._consumers for c in self._consumers[gid]}
        for c in consumers:  # names the pruned world must read from its own values
            masks.setdefault(c.weight, [])
            if c.kind not in ("conv", "gemm") and c.bias is not None and c.own_bias:
                masks.setdefault(c.bias, [])
        twin = twin_supported(ctx)
        world = PrunedWorld(masks, {}, {c.node.name: c.bias_vector(ctx).astype(ctx.array(c.weight).dtype)
                                        for c in consumers if c.kind in ("conv", "gemm")}) if twin else None
        feeds = self._feeds(ctx)
        worlds = Worlds(ctx, consumers, feeds, batch_stats=self.stats == "synthetic", pruned=world, outputs=twin)
        comp = Compensation()
        for stop in worlds.stops():
            c = stop.consumer
            units = kept_units[owner[c.node.name]]
            xp = stop.x_pruned if stop.x_pruned is not None else stop.x
            removes = not np.isin(c.col_unit, units).all()
            if not removes and all(np.array_equal(a, b) for a, b in zip(stop.x, xp)):
                continue  # nothing this consumer reads has changed
            x, y = input_rows(c, ctx, stop.x), input_rows(c, ctx, xp)
            if x is None or y is None:
                continue  # left as masked (the removed columns are sliced away)
            keep = np.flatnonzero(np.isin(c.col_unit, units))
            new, choice = guarded_refit(augmented(c, ctx), keep, x, y[:, keep], bias=bias_slot(c))
            del x, y
            comp.choices[c.node.name] = choice
            log.debug("obspa: %s: %s%s (held-out error %.4g, uncompensated %.4g)", c.node.name, choice.kind,
                      f" alpha {choice.alpha:g}" if choice.alpha is not None else "", choice.error, choice.error_none)
            if not choice.changed:
                continue  # its weights stay as sliced
            bias = comp.record(c, ctx, new, bias_slot(c))
            if world is not None:
                worlds.install(c, comp.weights[c.weight], bias)
        if world is not None:
            comp.output_drift = held_out_drift(worlds.finish(), feeds)
        s = comp.summary()
        log.info("obspa: %d consumers in %.1f s (%s): %d refitted, %d bias only, %d left as sliced "
                 "(chosen on held-out samples)", s["consumers"], time.perf_counter() - t0,
                 "sequential" if twin else "independent", s["refitted"], s["bias_only"], s["left_sliced"])
        return comp

    # ---- per-consumer statistics, independent compensation (moments; subclasses) ---------
    @property
    def _uses_layers(self) -> bool:
        """True for ``moments`` and for subclasses that bring their own :meth:`_statistics`."""
        return self.stats == "moments" or type(self)._statistics is not OBSPACriterion._statistics

    def _prepare_layers(self, groups: list[Group], ctx: ModelContext) -> None:
        flat = [c for g in groups for c in self._consumers[g.id]]
        stats = self._statistics(flat, ctx)
        for g in groups:
            layers = []
            for c in self._consumers[g.id]:
                st = stats.get(c.node.name)
                if st is None:
                    log.debug("obspa: no statistics for %s; it does not take part", c.node.name)
                    continue
                w = augmented(c, ctx)
                if isinstance(st, tuple):
                    layers.append((c, ObsLayer(w, c.col_unit, mean=st[0], var=st[1])))
                elif callable(st):
                    layers.append((c, ObsLayer(w, c.col_unit, h_factory=st)))
                else:
                    layers.append((c, ObsLayer(w, c.col_unit, h=st)))
            self._layers[g.id] = layers

    def _statistics(self, consumers: list[Consumer], ctx: ModelContext) -> dict[str, ColumnStats]:
        """Per consumer (moments): ``(mean, var)`` of its columns, or a function that builds its ``H``."""
        if not consumers:
            return {}

        consumers = sorted(consumers, key=lambda c: ctx.node_index[c.node.name])
        est = MomentEstimator(ctx, seed=self.seed, readers=[c.x for c in consumers])
        out: dict[str, ColumnStats] = {}
        for c in consumers:
            st = consumer_statistics(c, est)
            if st is not None:
                out[c.node.name] = st
            est.done(c.x)
        rest = [c for c in consumers if c.node.name not in out]
        if rest:
            # Inputs the moment model cannot follow (e.g. after a LayerNorm): synthetic
            # activations, still without data.
            log.info("obspa: %d consumers use synthetic activations", len(rest))
            out.update(activation_H(rest, ctx, self._random_batches(ctx), seed=self.seed))
        return out

    def _batches(self, ctx: ModelContext) -> Iterator[dict[str, np.ndarray]]:
        """Calibration batches of 16, or 8 batches of 16 ``N(0, 1)`` inputs (for the criteria
        that take plain activation statistics: ``fluctuation``, ``activation``)."""
        if self.calib is not None:
            yield from batches(ctx.model, self.calib, "--calib")  # a model's static batch is respected
            return
        yield from self._random_batches(ctx)

    def _random_batches(self, ctx: ModelContext) -> Iterator[dict[str, np.ndarray]]:
        for b in range(8):
            yield random_inputs(ctx.model, seed=self.seed * 1000 + b, batch=16, shapes=with_batch(ctx.model, self.input_shapes, 16))

    def _compensate_independent(self, pruned: dict[int, np.ndarray], ctx: ModelContext) -> Compensation:
        comp = Compensation()
        for gid, units in pruned.items():
            for c, layer in self._layers.get(gid, []):
                comp.record(c, ctx, refit(layer, units), bias_slot(c))
        return comp
