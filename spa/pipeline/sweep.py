"""Sweep the pruning ratio: params, MACs, measured latency and output fidelity per ratio.

    from spa.pipeline.sweep import sweep, parse_ratios
    from spa.records import Runtime
    result = sweep("model.onnx", parse_ratios("0.1:0.7:0.1"), runtime=Runtime(threads=2))
    print(result.table())

Every ratio is pruned from the same original with the same options (criterion, rounding,
exclusions, global ranking), exactly as ``spa prune --ratio R`` would. The original is the first
point (ratio 0). Latency comes from :func:`spa.report.bench.bench_models`, which times all the models in
one interleaved measurement so that background load slows them alike. With calibration data,
each pruned model is compared with the original on that data: *drift* as defined for
``--max-drift`` (:data:`spa.check.gates.DRIFT_DEFINITION`) and *agreement*, the fraction of samples whose
first output has the same argmax over its last axis as the original's. With labelled data, top-1
accuracy too.

Nothing here writes files or prints; the CLI (``spa sweep``) formats and writes. The plot
(:func:`plot`) needs matplotlib (``pip install 'spa[plot]'``), imported only when it is drawn.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from spa.check.gates import DRIFT_DEFINITION, LABELS_KEY, accuracy
from spa.errors import InvalidArgumentError, SpaError
from spa.model.runtime import make_session, random_inputs, run
from spa.pipeline.api import _load, prune
from spa.records import Bench, Runtime, Scoring, Selection
from spa.report.bench import bench_models, resolve_shapes
from spa.scoring.calib import batches

log = logging.getLogger(__name__)

FORMAT = "spa-sweep/1"
MAX_POINTS = 50
#: The default timing of :func:`sweep`: 3 warm-up and 20 timed runs per model.
TIMED = Bench()
_RANGE_RE = re.compile(r"^\s*([^:]+):([^:]+):([^:]+)\s*$")

ModelLike = onnx.ModelProto | str | os.PathLike[str]


def parse_ratios(text: str) -> list[float]:
    """``"0.1:0.7:0.1"`` (start:stop:step, stop included) or ``"0.2,0.4,0.6"`` -> sorted ratios.

    Every ratio must be in [0, 1); at most :data:`MAX_POINTS` of them. Ratio 0 (the original)
    is always measured, so it need not be listed.
    """
    s = str(text).strip()
    try:
        m = _RANGE_RE.match(s)
        if m:
            start, stop, step = (float(x) for x in m.groups())
            if not (step > 0 and math.isfinite(step)):
                raise InvalidArgumentError(f"--ratios {text!r}: the step must be > 0")
            if stop < start:
                raise InvalidArgumentError(f"--ratios {text!r}: stop {stop:g} is below start {start:g}")
            n = math.floor((stop - start) / step + 1e-9) + 1
            if n > MAX_POINTS:
                raise InvalidArgumentError(f"--ratios {text!r}: {n} ratios, at most {MAX_POINTS}")
            values = [round(start + k * step, 10) for k in range(n)]
        else:
            values = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--ratios {text!r}: expected START:STOP:STEP (0.1:0.7:0.1) "
                                   "or a comma-separated list (0.2,0.4,0.6)") from None
    if not values:
        raise InvalidArgumentError(f"--ratios {text!r}: no ratios given")
    for v in values:
        if not (0.0 <= v < 1.0):
            raise InvalidArgumentError(f"--ratios {text!r}: every ratio must be in [0, 1), got {v:g}")
    values = sorted(set(values))
    if len(values) > MAX_POINTS:
        raise InvalidArgumentError(f"--ratios {text!r}: {len(values)} ratios, at most {MAX_POINTS}")
    return values


# ---- fidelity ------------------------------------------------------------------------------


class Reference:
    """The original model's outputs on calibration data, computed once and compared many times."""

    def __init__(self, original: onnx.ModelProto, calib: Mapping[str, np.ndarray], device: str = "cpu",
                 where: str = "--calib") -> None:
        self.feeds = list(batches(original, calib, where))
        self.device = device
        sess = make_session(original, device)
        self.outputs = [run(sess, f) for f in self.feeds]
        self.samples = sum(len(next(iter(f.values()))) for f in self.feeds)

    def compare(self, model: onnx.ModelProto) -> dict[str, float | None]:
        """``drift`` (the ``--max-drift`` definition) and ``agreement`` (top-1 of the first output)."""
        sess = make_session(model, self.device)
        max_abs: dict[str, float] = {}
        scale: dict[str, float] = {}
        same = total = 0
        first = next(iter(self.outputs[0]), None) if self.outputs else None
        for f, ref in zip(self.feeds, self.outputs):
            got = run(sess, f)
            for name, r in ref.items():
                rf = np.asarray(r, dtype=np.float64)
                g = got.get(name)
                if g is None or np.shape(g) != rf.shape:
                    err = math.inf
                else:
                    err = float(np.max(np.abs(rf - np.asarray(g, dtype=np.float64)))) if rf.size else 0.0
                    err = math.inf if math.isnan(err) else err
                max_abs[name] = max(max_abs.get(name, 0.0), err)
                scale[name] = max(scale.get(name, 0.0), float(np.max(np.abs(rf))) if rf.size else 0.0)
            if first is None:
                continue  # a model without outputs: nothing to agree on
            r0 = np.asarray(ref[first])
            g0 = got.get(first)
            if g0 is not None and r0.ndim >= 2 and r0.shape[-1] > 1 and np.shape(g0) == r0.shape:
                same += int(np.sum(r0.argmax(-1) == np.asarray(g0).argmax(-1)))
                total += int(np.prod(r0.shape[:-1]))
        drift = max((max_abs[n] / scale[n] if scale[n] else max_abs[n] for n in max_abs), default=0.0)
        return {"drift": drift, "agreement": same / total if total else None}


# ---- the sweep -----------------------------------------------------------------------------


@dataclass
class SweepPoint:
    """One ratio: the pruned model's cost, measured latency and fidelity (None: not measured)."""

    ratio: float
    params: int
    macs: int
    size_bytes: int
    groups_pruned: int = 0
    units_removed: int = 0
    prune_seconds: float = 0.0
    median_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    speedup: float | None = None  # original median / this median
    ideal_speedup: float | None = None  # original MACs / these MACs
    drift: float | None = None
    agreement: float | None = None
    accuracy: float | None = None


@dataclass
class SweepResult:
    model: str
    criterion: str
    options: dict[str, Any]
    points: list[SweepPoint]  # the first is the original (ratio 0)
    bench: dict[str, Any] | None = None  # settings of the latency measurement
    fidelity: dict[str, Any] | None = None  # data and sample counts
    seconds: float = 0.0
    models: list[onnx.ModelProto] = field(default_factory=list, repr=False)  # pruned, one per ratio > 0

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.model, "criterion": self.criterion, "options": self.options,
                "bench": self.bench, "fidelity": self.fidelity, "seconds": self.seconds,
                "points": [asdict(p) for p in self.points]}

    def columns(self) -> list[tuple[str, str]]:
        """``(field, heading)`` of the columns that have values."""
        cols = [("ratio", "ratio"), ("params", "params"), ("macs", "MACs"), ("size_bytes", "size bytes"),
                ("groups_pruned", "groups pruned"), ("median_ms", "median ms"), ("p90_ms", "p90 ms"),
                ("speedup", "speedup"), ("ideal_speedup", "ideal (MACs)"), ("drift", "drift"),
                ("agreement", "top-1 agreement"), ("accuracy", "accuracy")]
        return [(f, h) for f, h in cols if any(getattr(p, f) is not None for p in self.points)]

    def table(self) -> str:
        """A Markdown table (readable on a console too)."""
        cols = self.columns()
        lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
        for p in self.points:
            lines.append("| " + " | ".join(_cell(f, getattr(p, f), p) for f, _ in cols) + " |")
        return "\n".join(lines)

    def csv(self) -> str:
        """Every field of every point, one row per ratio."""
        buf = io.StringIO()
        names = list(asdict(self.points[0]))
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for p in self.points:
            w.writerow(["" if v is None else v for v in asdict(p).values()])
        return buf.getvalue()


def _cell(name: str, v: Any, p: SweepPoint) -> str:
    if v is None:
        return "-"
    if name == "ratio":
        return "original" if v == 0 else f"{v:.3g}"
    if name in ("params", "macs"):
        return _si(v)
    if name == "size_bytes":
        return f"{v:,}"
    if name in ("median_ms", "p90_ms"):
        return f"{v:.3f}"
    if name in ("speedup", "ideal_speedup"):
        return f"{v:.2f}x"
    if name in ("agreement", "accuracy"):
        return f"{v:.1%}"
    if name == "drift":
        return f"{v:.4g}"
    return str(v)


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def sweep(
    model: ModelLike,
    ratios: Sequence[float],
    criterion: str = "l1",
    *,
    selection: Selection | None = None,
    scoring: Scoring | None = None,
    runtime: Runtime | None = None,
    bench: Bench | None = TIMED,
    eval_data: Mapping[str, np.ndarray] | None = None,
    keep_models: bool = False,
) -> SweepResult:
    """Prune ``model`` at each ratio and measure every result against the original.

    Every ratio is pruned as :func:`spa.prune` would with ``selection``, ``scoring`` and ``runtime``.
    ``bench`` (:class:`~spa.records.Bench`, default :data:`TIMED`; None: no timing) times the original and every pruned model
    in one interleaved onnxruntime run (``runtime``'s device and threads). ``scoring.calib`` (arrays keyed
    by input name) adds drift and top-1 agreement against the original (and feeds the criteria as in
    :func:`spa.prune`); ``eval_data`` (the same plus ``labels``) adds top-1 accuracy. ``keep_models``
    keeps the pruned models in the result (``result.models``). ``runtime.shapes`` states typical input
    shapes (:mod:`spa.model.sizes`): MACs and latency are measured at the typical sizes;
    ``runtime.progress`` follows the sweep. Raises :class:`~spa.errors.SpaError` subclasses for bad input.
    """

    t0 = time.perf_counter()
    ratios = [float(r) for r in ratios]
    for r in ratios:
        if not (0.0 <= r < 1.0):
            raise InvalidArgumentError(f"every ratio must be in [0, 1), got {r:g}")
    ratios = sorted(set(ratios) - {0.0})
    if not ratios:
        raise InvalidArgumentError("give at least one ratio above 0 to sweep")
    selection, scoring, runtime = selection or Selection(), scoring or Scoring(), runtime or Runtime()
    progress, device = runtime.progress, runtime.device
    original, source = _load(model)
    ref = Reference(original, scoring.calib, device, scoring.calib_name) if scoring.calib else None
    points: list[SweepPoint] = []
    pruned_models: list[onnx.ModelProto] = []
    steps = len(ratios) + (1 if bench is not None else 0)
    quiet = replace(runtime, progress=None)  # the sweep's own progress, not each prune's
    typical = None
    for k, r in enumerate(ratios):
        if progress:
            progress("prune", k, steps)
        t1 = time.perf_counter()
        pruned, _, report = prune(original, r, criterion, selection=selection, scoring=scoring, runtime=quiet)
        typical = (report.sizes or {}).get("typical")
        if not points:
            points.append(SweepPoint(0.0, report.before.params, report.before.macs, report.before.size_bytes))
            if report.groups_prunable == 0:
                raise SpaError(f"nothing to prune in {source}: every group is blocked or has one channel "
                               "(run `spa groups` to see why)")
        p = SweepPoint(r, report.after.params, report.after.macs, report.after.size_bytes, report.groups_pruned,
                       report.units_removed, time.perf_counter() - t1)
        p.ideal_speedup = points[0].macs / p.macs if p.macs else None
        points.append(p)
        pruned_models.append(pruned)
        log.info("ratio %.3g: params %d, MACs %d (%.1f s)", r, p.params, p.macs, p.prune_seconds)
    points[0].ideal_speedup = 1.0 if points[0].macs else None
    bench_info = None
    if bench is not None:
        if progress:
            progress("bench", len(ratios), steps)
        bench_info = _bench(original, pruned_models, points, device=device, threads=runtime.threads,
                            warmup=bench.warmup, runs=bench.runs, seed=scoring.seed, shapes=typical)
    fidelity_info = None
    if ref is not None:
        base = ref.compare(original)  # 0 and 100 % unless onnxruntime is not deterministic
        points[0].drift, points[0].agreement = base["drift"], base["agreement"]
        for p, m in zip(points[1:], pruned_models):
            got = ref.compare(m)
            p.drift, p.agreement = got["drift"], got["agreement"]
        fidelity_info = {"data": scoring.calib_name, "samples": ref.samples, "drift": DRIFT_DEFINITION,
                         "agreement": "fraction of samples whose first output has the original's argmax "
                                      "over the last axis"}
    if eval_data is not None:
        for p, m in zip(points, [original, *pruned_models]):
            p.accuracy = accuracy(m, eval_data, device)
        fidelity_info = {**(fidelity_info or {}), "eval_samples": int(len(eval_data[LABELS_KEY]))}
    if progress:
        progress("done", steps, steps)
    options = {"global": selection.global_ranking, "round_to": selection.round_to, "exclude": list(selection.exclude),
               "seed": scoring.seed, "prune_norm_axes": selection.prune_norm_axes, "stats": scoring.stats}
    return SweepResult(source, criterion, options, points, bench_info, fidelity_info, time.perf_counter() - t0,
                       pruned_models if keep_models else [])


def _bench(original: onnx.ModelProto, pruned: list[onnx.ModelProto], points: list[SweepPoint], *, device: str,
           threads: int, warmup: int, runs: int, seed: int,
           shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Time the original and every pruned model together; fill the latency columns of ``points``."""

    concrete, _ = resolve_shapes(original, shapes)  # the typical sizes MACs were counted at
    feeds = random_inputs(original, seed=seed, shapes=concrete)  # every pruned model has the same inputs
    names = ["original"] + [f"ratio {p.ratio:g}" for p in points[1:]]
    results = bench_models([original, *pruned], names=names, device=device, threads=threads, warmup=warmup,
                           runs=runs, inputs=feeds)
    base = results[0].median_ms
    for p, r in zip(points, results):
        p.median_ms, p.p90_ms, p.min_ms = r.median_ms, r.p90_ms, r.min_ms
        p.speedup = base / r.median_ms if r.median_ms > 0 else None
    first = results[0]
    return {"device": device, "providers": first.providers, "threads": threads, "batch": first.batch,
            "input_shapes": first.input_shapes, "warmup": warmup, "runs": runs}


# ---- plot ----------------------------------------------------------------------------------


def plot(result: SweepResult) -> bytes:
    """A PNG of the sweep: cost, speedup and fidelity against the ratio. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpaError("--plot needs matplotlib: pip install 'spa[plot]' (or pip install matplotlib)") from None
    pts = result.points
    x = [p.ratio for p in pts]
    panels = ["cost"]
    if any(p.speedup is not None for p in pts):
        panels.append("speed")
    if any(p.drift is not None or p.accuracy is not None for p in pts):
        panels.append("fidelity")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "cost":
            ax.plot(x, [p.params / max(pts[0].params, 1) for p in pts], "o-", label="params")
            ax.plot(x, [p.macs / max(pts[0].macs, 1) for p in pts], "s-", label="MACs")
            ax.set_ylabel("fraction of the original")
            ax.set_ylim(0, 1.05)
            ax.set_title("cost")
        elif panel == "speed":
            ax.plot(x, [p.speedup for p in pts], "o-", label="measured speedup")
            ax.plot(x, [p.ideal_speedup for p in pts], "--", color="gray", label="ideal (MACs)")
            ax.set_ylabel("speedup over the original (x)")
            b = result.bench or {}
            n = b.get("threads") or 0
            ax.set_title(f"latency, {b.get('device', 'cpu')}, " + (f"{n} thread{'s' * (n != 1)}" if n else "default threads"))
        else:
            if any(p.drift is not None for p in pts):
                ax.plot(x, [p.drift for p in pts], "o-", color="tab:red", label="drift")
                ax.set_ylabel("drift (max rel. output error)")
            right = ax.twinx()
            if any(p.agreement is not None for p in pts):
                right.plot(x, [p.agreement for p in pts], "s-", color="tab:green", label="top-1 agreement")
            if any(p.accuracy is not None for p in pts):
                right.plot(x, [p.accuracy for p in pts], "^-", color="tab:purple", label="accuracy")
            right.set_ylim(0, 1.05)
            right.set_ylabel("fraction")
            handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
            ax.legend(handles=handles, fontsize=8, loc="center left")
            ax.set_title("fidelity")
        ax.set_xlabel("ratio")
        ax.grid(alpha=0.3)
        if panel != "fidelity":
            ax.legend(fontsize=8)
    fig.suptitle(f"{os.path.basename(result.model)} — criterion {result.criterion}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
