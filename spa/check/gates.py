"""CI gates for ``spa prune``: limits the pruned model must meet, or the run fails with exit 4.

| gate | value | passes when |
|---|---|---|
| ``max-params N`` | parameters of the pruned model | ``value <= N`` |
| ``max-macs N`` | MACs per inference (batch 1) of the pruned model | ``value <= N`` |
| ``min-speedup X`` | measured latency speedup (``spa prune --bench``: median before / after) | ``value >= X`` |
| ``max-drift E`` | relative output drift against the original (:func:`measure_drift`) | ``value <= E`` |
| ``min-accuracy A`` | top-1 accuracy of the pruned model on ``--eval`` data (:func:`accuracy`) | ``value >= A`` |

Counts accept the suffixes k, M, G and T (powers of 1000): ``2.5M``, ``300k``, ``1.2G``.
Everything here is computed in memory; the CLI writes nothing when a gate fails.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from spa.check.verify import OutputDiff
from spa.errors import InvalidArgumentError
from spa.model.runtime import make_session, random_inputs, run
from spa.model.sizes import with_batch
from spa.scoring.calib import arrays_for_inputs, batches, fixed_batch, read_arrays

#: Seeded N(0, 1) samples the drift is measured on when no ``--calib`` data is given.
DRIFT_SAMPLES = 8
LABELS_KEY = "labels"

DRIFT_DEFINITION = ("max over outputs of max|pruned - original| / max|original|, over all samples "
                    "(an output whose original is all zero counts its max |pruned - original|)")

_COUNT_RE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_count(text: str | int | float) -> int:
    """``"2.5M"`` -> 2_500_000; suffixes k, M, G, T (case-insensitive, powers of 1000); ``_`` allowed."""
    if isinstance(text, bool):
        raise ValueError(f"not a count: {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _COUNT_RE.match(text)
        if not m:
            raise ValueError(f"not a count: {text!r} (expected e.g. 1500000, 2.5M, 300k, 1.2G)")
        value = float(m[1].replace("_", "")) * _SCALE[m[2].lower()]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a count: {text!r} (must be a finite number >= 0)")
    return int(round(value))


def parse_fraction(text: str | int | float) -> float:
    """A number, or a percentage such as ``"92%"`` (-> 0.92)."""
    if isinstance(text, bool):
        raise ValueError(f"not a number: {text!r}")
    s = str(text).strip()
    scale = 1.0
    if s.endswith("%"):
        s, scale = s[:-1], 0.01
    try:
        value = float(s) * scale
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


# ---- the gates -----------------------------------------------------------------------------


@dataclass
class GateSpec:
    """The limits asked for; ``None`` means the gate is off."""

    max_params: int | None = None
    max_macs: int | None = None
    min_speedup: float | None = None
    max_drift: float | None = None
    min_accuracy: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def check(self, has_eval: bool) -> None:
        """Refuse limits that make no sense, before any work is done."""
        if self.min_speedup is not None and not self.min_speedup > 0:
            raise InvalidArgumentError(f"--min-speedup must be > 0, got {self.min_speedup}")
        if self.max_drift is not None and not self.max_drift >= 0:
            raise InvalidArgumentError(f"--max-drift must be >= 0, got {self.max_drift}")
        if self.min_accuracy is not None:
            if not 0 <= self.min_accuracy <= 1:
                raise InvalidArgumentError(f"--min-accuracy must be in [0, 1] (or a percentage such as 92%), "
                                           f"got {self.min_accuracy}")
            if not has_eval:
                raise InvalidArgumentError("--min-accuracy needs labelled data: --eval DATA.npz "
                                           f"(arrays keyed by input name plus '{LABELS_KEY}')")


@dataclass
class Gate:
    name: str  # the option without dashes, e.g. "max-drift"
    value: float | None  # None: could not be measured (fails)
    limit: float
    op: str  # "<=" or ">="
    passed: bool
    unit: str = ""  # "count", "x", "fraction" or "" (a plain number), for formatting

    def value_text(self) -> str:
        return _fmt(self.value, self.unit)

    def limit_text(self) -> str:
        return f"{self.op} {_fmt(self.limit, self.unit)}"

    def reason(self) -> str:
        """One phrase for the failure line, e.g. ``max-drift: 0.37 > 0.05``."""
        bad = {"<=": ">", ">=": "<"}[self.op]
        return f"{self.name}: {self.value_text()} {bad} {_fmt(self.limit, self.unit)}"


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "count":
        return f"{int(v):,}"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "fraction":
        return f"{v:.2%}"
    return f"{v:.4g}"


def _gate(name: str, value: float | None, limit: float, op: str, unit: str) -> Gate:
    ok = value is not None and math.isfinite(value) and (value <= limit if op == "<=" else value >= limit)
    return Gate(name, value, limit, op, bool(ok), unit)


def evaluate(spec: GateSpec, *, params: int, macs: int, speedup: float | None = None,
             drift: float | None = None, accuracy: float | None = None) -> list[Gate]:
    """One :class:`Gate` per limit in ``spec``, in a fixed order."""
    gates = []
    if spec.max_params is not None:
        gates.append(_gate("max-params", params, spec.max_params, "<=", "count"))
    if spec.max_macs is not None:
        gates.append(_gate("max-macs", macs, spec.max_macs, "<=", "count"))
    if spec.min_speedup is not None:
        gates.append(_gate("min-speedup", speedup, spec.min_speedup, ">=", "x"))
    if spec.max_drift is not None:
        gates.append(_gate("max-drift", drift, spec.max_drift, "<=", ""))
    if spec.min_accuracy is not None:
        gates.append(_gate("min-accuracy", accuracy, spec.min_accuracy, ">=", "fraction"))
    return gates


def failure_message(gates: Sequence[Gate]) -> str:
    """``max-drift: 0.37 > 0.05; max-params: 17,480 > 10,000``."""
    return "; ".join(g.reason() for g in gates if not g.passed)


def format_gates(gates: Sequence[Gate]) -> str:
    """Console lines: one per gate with value, limit and pass/FAIL."""
    n_ok = sum(g.passed for g in gates)
    lines = [f"gates: {n_ok} of {len(gates)} passed"]
    for g in gates:
        lines.append(f"  {g.name:13} {g.value_text():>14}  {g.limit_text():<16} {'pass' if g.passed else 'FAIL'}")
    return "\n".join(lines)


def gates_to_dicts(gates: Sequence[Gate]) -> list[dict[str, Any]]:
    return [{"name": g.name, "value": g.value, "limit": g.limit, "op": g.op, "passed": g.passed} for g in gates]


# ---- running models on data ----------------------------------------------------------------



def random_batches(model: onnx.ModelProto, seed: int, samples: int = DRIFT_SAMPLES,
                   shapes: Mapping[str, Sequence[int]] | None = None) -> list[dict[str, np.ndarray]]:
    """``samples`` seeded N(0, 1) samples: one run at batch ``samples`` on a dynamic batch axis,
    else ``samples`` runs at the model's own batch size (seeds ``seed``, ``seed + 1``, ...).
    ``shapes`` (the typical sizes, :mod:`spa.model.sizes`) sizes the other dynamic axes."""
    if fixed_batch(model) is None:
        return [random_inputs(model, seed=seed, batch=samples, shapes=with_batch(model, shapes, samples))]
    return [random_inputs(model, seed=seed + i, shapes=with_batch(model, shapes, 1)) for i in range(samples)]


@dataclass
class Drift:
    """Output drift of a pruned model against the original (see :data:`DRIFT_DEFINITION`)."""

    value: float
    outputs: list[OutputDiff] = field(default_factory=list)
    data: str = "random"  # "random" or the --calib path
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "definition": DRIFT_DEFINITION, "data": self.data, "samples": self.samples,
                "outputs": [{"name": o.name, "max_abs": o.max_abs, "scale": o.scale, "rel": o.rel}
                            for o in self.outputs]}


def measure_drift(original: onnx.ModelProto, pruned: onnx.ModelProto, *, seed: int = 0, device: str = "cpu",
                  calib: Mapping[str, np.ndarray] | None = None, calib_name: str = "--calib",
                  shapes: Mapping[str, Sequence[int]] | None = None) -> Drift:
    """Relative drift ``max_o max|pruned_o - original_o| / max|original_o|`` over all samples.

    The samples are ``calib`` (arrays keyed by input name), else :data:`DRIFT_SAMPLES` seeded
    N(0, 1) samples at the input ``shapes`` (the typical sizes; their batch aside). The maxima are
    taken over every sample and element before dividing.
    """
    feeds = list(batches(original, calib, calib_name)) if calib else random_batches(original, seed, shapes=shapes)
    s_orig, s_pruned = make_session(original, device), make_session(pruned, device)
    max_abs: dict[str, float] = {}
    scale: dict[str, float] = {}
    samples = 0
    for f in feeds:
        first = next(iter(f.values()), None)
        samples += len(first) if first is not None and first.ndim else 1
        ref, got = run(s_orig, f), run(s_pruned, f)
        for name, r in ref.items():
            g = got.get(name)
            rf = np.asarray(r, dtype=np.float64)
            if g is None or np.shape(g) != rf.shape:
                err = math.inf
            else:
                err = float(np.max(np.abs(rf - np.asarray(g, dtype=np.float64)))) if rf.size else 0.0
                if math.isnan(err):
                    err = math.inf
            max_abs[name] = max(max_abs.get(name, 0.0), err)
            scale[name] = max(scale.get(name, 0.0), float(np.max(np.abs(rf))) if rf.size else 0.0)
    outs = [OutputDiff(n, max_abs[n], scale[n], True) for n in max_abs]
    value = max((o.rel for o in outs), default=0.0)
    return Drift(value, outs, calib_name if calib else "random", samples)


# ---- labelled data -------------------------------------------------------------------------


def load_eval(path: str | os.PathLike[str], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """``--eval DATA.npz``: arrays keyed by input name plus integer ``labels`` (one per sample).

    A model with one input also takes a file with one non-label array of any name. Returns the
    input arrays plus ``labels``; every array has the labels' length on axis 0.
    """

    p = Path(path)
    arrays = read_arrays(p, "--eval")
    if LABELS_KEY not in arrays:
        raise InvalidArgumentError(f"--eval {p}: no '{LABELS_KEY}' array (found: {sorted(arrays)})")
    labels = np.asarray(arrays.pop(LABELS_KEY))
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) == 0:
        raise InvalidArgumentError(f"--eval {p}: '{LABELS_KEY}' must be a non-empty 1-D integer array, "
                                   f"got {labels.dtype} of shape {labels.shape}")
    out = arrays_for_inputs(arrays, model, f"--eval {p}")
    for name, a in out.items():
        if len(a) != len(labels):
            raise InvalidArgumentError(f"--eval {p}: array '{name}' has {len(a)} samples, '{LABELS_KEY}' has "
                                       f"{len(labels)}")
    renamed = len(arrays) == 1 and len(out) == 1  # one input takes one array of any name
    extra = [] if renamed else sorted(set(arrays) - set(out))
    if extra:
        raise InvalidArgumentError(f"--eval {p}: arrays {extra} match no model input "
                                   f"(inputs: {', '.join(out)})")
    out[LABELS_KEY] = labels
    return out


def accuracy(model: onnx.ModelProto, data: Mapping[str, np.ndarray], device: str = "cpu",
             where: str = "--eval") -> float:
    """Top-1 accuracy: argmax over the last axis of the model's first output, against ``labels``."""
    labels = data[LABELS_KEY]
    inputs = {k: v for k, v in data.items() if k != LABELS_KEY}
    sess = make_session(model, device)
    first = sess.get_outputs()[0].name
    correct = 0
    done = 0
    for f in batches(model, inputs, where):
        out = np.asarray(sess.run([first], f)[0])
        n = len(next(iter(f.values())))
        pred = out.argmax(axis=-1).reshape(-1) if out.ndim else out.reshape(-1)
        if pred.size != n:
            raise InvalidArgumentError(f"{where}: the first output '{first}' has shape {list(out.shape)} for "
                                       f"{n} samples; top-1 accuracy needs one row of class scores per sample")
        correct += int(np.sum(pred == labels[done:done + n]))
        done += n
    return correct / max(done, 1)
