"""Measured speed: onnxruntime latency, throughput, size and memory of one or more models.

    from spa.report.bench import bench_model
    r = bench_model("model.onnx", threads=2, warmup=5, runs=50)
    print(r.median_ms, r.p90_ms, r.throughput)

Each model gets its own session (providers passed explicitly, see :mod:`spa.model.runtime`) and
some untimed warm-up runs; then the timed runs of ``session.run`` on fixed inputs go round the
models in turns of ten, so that load from elsewhere on the machine slows them alike (one model
runs at a time; each turn starts with a short pause and an untimed run, see :data:`SETTLE_S`). Latency is wall-clock time per ``run`` call, inputs and outputs included (on
CUDA that includes the host/device copies).

Peak memory (Linux only) is the growth of the process's resident set: ``VmHWM`` (peak RSS)
after the warm-up runs minus ``VmRSS`` just before the session is created, with the peak reset
through ``/proc/self/clear_refs`` first. It covers session creation (the graph, optimised
weights, the arena) and the warm-up runs, not the Python copy of the model SPA loads to count parameters and MACs,
and not GPU memory. Where the peak cannot be reset it is ``None``.

Nothing here prints; the CLI (``spa bench``, ``spa prune --bench``) formats the results.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import onnx

from spa.errors import InvalidArgumentError, SpaError
from spa.model.graph import ModelContext
from spa.model.io import check_is_model, load_model, serialized_size, write_external
from spa.model.metrics import Cost, measure
from spa.model.runtime import INLINE_LIMIT, _ort, input_specs, make_session, random_inputs, resolve_device
from spa.model.shapes import complete_with_runtime, infer_shapes
from spa.model.sizes import derive
from spa.version import __version__

log = logging.getLogger(__name__)

ModelLike = onnx.ModelProto | str | os.PathLike[str]

FORMAT = "spa-bench/1"
MEMORY_NOTE = ("peak RSS +: process peak resident memory (VmHWM, reset before each model) minus the "
               "resident memory just before its session was created; covers session creation and the warm-up "
               "runs, host memory only")

# In-memory models bigger than this are handed to onnxruntime as a file with external data
# (a serialized protobuf cannot exceed 2 GiB).


@dataclass
class BenchResult:
    """Measured latency of one model, with its static cost. Times are in milliseconds."""

    model: str
    device: str
    providers: list[str]
    threads: int  # intra-op threads asked for; 0 = onnxruntime's default (one per physical core)
    batch: int
    input_shapes: dict[str, list[int]]
    warmup: int
    times_ms: list[float] = field(repr=False)
    params: int
    macs: int  # per inference (batch 1), at the benchmarked input sizes
    size_bytes: int  # on disk, external data included (serialized size for an in-memory model)
    peak_rss_growth_bytes: int | None = None

    @property
    def runs(self) -> int:
        return len(self.times_ms)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.times_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.times_ms, 90))

    @property
    def min_ms(self) -> float:
        return float(np.min(self.times_ms))

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.times_ms))

    @property
    def throughput(self) -> float:
        """Inferences per second: ``batch`` divided by the median latency."""
        return self.batch / (self.median_ms / 1000.0)

    def to_dict(self, times: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model, "device": self.device, "providers": self.providers,
            "threads": self.threads, "batch": self.batch, "input_shapes": self.input_shapes,
            "warmup": self.warmup, "runs": self.runs,
            "median_ms": self.median_ms, "p90_ms": self.p90_ms, "min_ms": self.min_ms, "mean_ms": self.mean_ms,
            "throughput": self.throughput, "params": self.params, "macs": self.macs,
            "size_bytes": self.size_bytes, "peak_rss_growth_bytes": self.peak_rss_growth_bytes,
        }
        if times:
            d["times_ms"] = list(self.times_ms)
        return d


# ---- options -------------------------------------------------------------------------------


_SHAPE_RE = re.compile(r"^(?P<name>.+):(?P<dims>\d+(?:[xX]\d+)*)$")


def parse_shape(text: str) -> tuple[str, list[int]]:
    """``"input:1x3x224x224"`` -> ``("input", [1, 3, 224, 224])``; every size must be >= 1."""
    m = _SHAPE_RE.match(text.strip())
    if not m:
        raise InvalidArgumentError(f"--shape {text!r}: expected NAME:D1xD2x..., e.g. input:1x3x224x224")
    dims = [int(d) for d in re.split("[xX]", m["dims"])]
    if any(d < 1 for d in dims):
        raise InvalidArgumentError(f"--shape {text!r}: every size must be >= 1")
    return m["name"], dims


def load_inputs(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Arrays keyed by input name from a ``.npz``, or one array from a ``.npy`` (keyed ``""``: it
    feeds a model with one input)."""
    p = Path(path)
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return {"": data}
        with data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InvalidArgumentError(f"--inputs {p}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidArgumentError(f"--inputs {p}: not a .npz (or .npy) file ({exc})") from None


def _check_options(warmup: int, runs: int, threads: int, batch: int | None, seconds: float | None) -> None:
    if warmup < 0:
        raise InvalidArgumentError(f"--warmup must be >= 0, got {warmup}")
    if runs < 1:
        raise InvalidArgumentError(f"--runs must be >= 1, got {runs}")
    if threads < 0:
        raise InvalidArgumentError(f"--threads must be >= 0 (0: onnxruntime's default), got {threads}")
    if batch is not None and batch < 1:
        raise InvalidArgumentError(f"--batch must be >= 1, got {batch}")
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise InvalidArgumentError(f"--seconds must be > 0, got {seconds}")


# ---- inputs --------------------------------------------------------------------------------


def _static(d: int | str | None) -> TypeGuard[int]:
    """Whether ``d`` is a fixed, positive size (not a symbol, not unknown)."""
    return isinstance(d, int) and d > 0


def _np_dtype(elem_type: int, name: str) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        raise SpaError(f"input '{name}' has element type {elem_type}, which spa bench cannot feed") from None


def resolve_shapes(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None = None,
                   batch: int | None = None, where: str = "model") -> tuple[dict[str, list[int]], int]:
    """Concrete input shapes and the batch size for ``model``.

    ``shapes`` gives whole shapes by input name; other inputs take their static sizes, ``batch``
    (default 1) on a dynamic axis 0 and the typical size :func:`spa.model.sizes.derive` gives any other
    dynamic axis (with a warning). The batch
    is axis 0 of the inputs whose axis 0 is dynamic, 1 if there are none.
    """
    specs = input_specs(model)
    names = [s[0] for s in specs]
    shapes = dict(shapes or {})
    for n in shapes:
        if n not in names:
            raise InvalidArgumentError(f"--shape {n}: {where} has no input '{n}' (inputs: {', '.join(names)})")
    out: dict[str, list[int]] = {}
    batches: set[int] = set()
    typical: dict[str, list[int]] | None = None
    for name, dims, _ in specs:
        dyn0 = bool(dims) and not _static(dims[0])
        if name in shapes:
            s = [int(d) for d in shapes[name]]
            if len(s) != len(dims):
                raise InvalidArgumentError(f"--shape {name}: {len(s)} sizes given, input '{name}' of {where} "
                                           f"has rank {len(dims)} ({_dims_text(dims)})")
            for k, (d, v) in enumerate(zip(dims, s)):
                if _static(d) and d != v:
                    raise InvalidArgumentError(f"--shape {name}: axis {k} of input '{name}' of {where} is fixed "
                                               f"at {d}, got {v} ({_dims_text(dims)})")
            if dyn0 and batch is not None and s[0] != batch:
                raise InvalidArgumentError(f"--shape {name} sets batch {s[0]} but --batch is {batch}")
        else:
            s = []
            for k, d in enumerate(dims):
                if _static(d):
                    s.append(int(d))
                elif k == 0:
                    s.append(batch or 1)
                else:
                    typical = typical or derive(model).typical  # once, and only for a dynamic non-batch axis
                    derived = typical[name][k]
                    log.warning("%s: input '%s' axis %d (%s) is dynamic; using %d, derived from the graph "
                                "(set it with --shape %s:...)", where, name, k, d or "?", derived, name)
                    s.append(derived)
        if dyn0:
            batches.add(s[0])
        out[name] = s
    if batch is not None and batch > 1 and not batches:
        raise InvalidArgumentError(f"--batch {batch}: {where} has no input with a dynamic batch axis "
                                   f"({'; '.join(f'{n}: {_dims_text(d)}' for n, d, _ in specs)})")
    if len(batches) > 1:
        raise InvalidArgumentError(f"{where}: inputs with a dynamic batch axis got different batch sizes {sorted(batches)}")
    return out, (batches.pop() if batches else 1)


def feeds_from_arrays(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray],
                      where: str = "model") -> tuple[dict[str, np.ndarray], int]:
    """Check ``arrays`` (from :func:`load_inputs`) against the inputs of ``model``; feeds and batch."""
    specs = input_specs(model)
    names = [s[0] for s in specs]
    arrays = dict(arrays)
    if len(specs) == 1 and len(arrays) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        raise InvalidArgumentError(f"--inputs: {where} has no input {', '.join(map(repr, unknown))} "
                                   f"(inputs: {', '.join(names)})")
    feeds: dict[str, np.ndarray] = {}
    batches: set[int] = set()
    for name, dims, et in specs:
        if name not in arrays:
            raise InvalidArgumentError(f"--inputs: no array for input '{name}' of {where}")
        a = np.asarray(arrays[name])
        if a.ndim != len(dims) or any(_static(d) and d != s for d, s in zip(dims, a.shape)):
            raise InvalidArgumentError(f"--inputs: array '{name}' has shape {list(a.shape)}, input '{name}' "
                                       f"of {where} is {_dims_text(dims)}")
        feeds[name] = np.ascontiguousarray(a.astype(_np_dtype(et, name), copy=False))
        if dims and not _static(dims[0]):
            batches.add(int(a.shape[0]))
    if len(batches) > 1:
        raise InvalidArgumentError(f"--inputs: arrays on a dynamic batch axis differ in length {sorted(batches)}")
    return feeds, (batches.pop() if batches else 1)


def _dims_text(dims: Sequence[int | str | None]) -> str:
    return "x".join(str(d) if d is not None else "?" for d in dims) or "scalar"


# ---- static cost ---------------------------------------------------------------------------


def _cost(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], owned: bool) -> Cost:
    """Params and MACs at batch 1, with dynamic non-batch input sizes fixed to ``shapes``."""
    specs = input_specs(model)
    fix = any(not _static(d) for _, dims, _ in specs for d in dims[1:])
    m = model
    if fix or not owned:  # ModelContext.build names unnamed nodes: never touch the caller's model
        m = onnx.ModelProto()
        m.CopyFrom(model)
    if fix:
        for i in m.graph.input:
            if i.name not in shapes:
                continue
            for k, d in enumerate(i.type.tensor_type.shape.dim):
                if k > 0 and not (d.HasField("dim_value") and d.dim_value > 0):
                    d.Clear()
                    d.dim_value = int(shapes[i.name][k])
    ctx = ModelContext.build(m, infer_shapes(m))
    complete_with_runtime(ctx)
    return measure(ctx)


def _external_files(path: Path) -> list[Path]:
    """The external data files an ONNX file refers to (deduplicated)."""
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - load_model has already validated the file
        return []
    tensors = list(m.graph.initializer)
    tensors += [a.t for n in m.graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t")]
    files: dict[Path, None] = {}
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc:
                files[path.parent / loc] = None
    return list(files)


def file_size(path: str | os.PathLike[str]) -> int:
    """Bytes of an ONNX file plus the external data files it refers to."""
    p = Path(path)
    return p.stat().st_size + sum(f.stat().st_size for f in _external_files(p) if f.is_file())


# ---- memory --------------------------------------------------------------------------------


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_primed: set[str] = set()


def _prime_runtime(device: str) -> None:
    """Run a one-node model once per device, so that onnxruntime's one-time set-up (its
    environment, the CUDA context) is not charged to the first model measured."""
    if device in _primed:
        return
    vi = onnx.helper.make_tensor_value_info
    g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "prime",
                               [vi("x", onnx.TensorProto.FLOAT, [1])], [vi("y", onnx.TensorProto.FLOAT, [1])])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 13)])
    m.ir_version = 7
    with contextlib.suppress(Exception):  # the real session reports any problem properly
        make_session(m, device=device).run(None, {"x": np.zeros(1, np.float32)})
    _primed.add(device)


def _release_memory() -> None:
    gc.collect()
    with contextlib.suppress(Exception):  # glibc only: hand freed heap pages back to the OS
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---- running -------------------------------------------------------------------------------


@contextlib.contextmanager
def _session_source(model: onnx.ModelProto | Path) -> Iterator[str | bytes]:
    """What onnxruntime loads: the path itself, serialized bytes, or a temporary external-data file."""
    if isinstance(model, Path):
        yield str(model)
        return
    if serialized_size(model) <= INLINE_LIMIT:
        yield model.SerializeToString()
        return
    with tempfile.TemporaryDirectory(prefix=".spa-bench-") as d:
        path = Path(d) / "model.onnx"
        write_external(model, path, "model.onnx.data")
        yield str(path)


def _ort_error(where: str, exc: Exception) -> SpaError:
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return SpaError(f"{where}: onnxruntime cannot run the model: {first}")


@dataclass
class _Prepared:
    label: str
    source: onnx.ModelProto | Path
    feeds: dict[str, np.ndarray]
    input_shapes: dict[str, list[int]]
    batch: int
    cost: Cost
    size: int


def _prepare(model: ModelLike, name: str | None, batch: int | None, shapes: Mapping[str, Sequence[int]] | None,
             inputs: Mapping[str, np.ndarray] | None, seed: int) -> _Prepared:
    if isinstance(model, onnx.ModelProto):
        check_is_model(model)
        proto, src_path = model, None
        label = name or model.graph.name or "model"
        size = serialized_size(model)
    else:
        src_path = Path(model)
        proto = load_model(src_path)
        label = name or str(model)
        size = file_size(src_path)
    if inputs is not None:
        feeds, n_batch = feeds_from_arrays(proto, inputs, label)
        input_shapes = {k: list(v.shape) for k, v in feeds.items()}
    else:
        input_shapes, n_batch = resolve_shapes(proto, shapes, batch, label)
        feeds = random_inputs(proto, seed=seed, shapes=input_shapes)
    cost = _cost(proto, input_shapes, owned=src_path is not None)
    # A file is loaded by onnxruntime itself: SPA's copy is dropped before memory is measured.
    return _Prepared(label, src_path if src_path is not None else proto, feeds, input_shapes, n_batch, cost, size)


def _open(p: _Prepared, device: str, threads: int, warmup: int) -> tuple[Any, list[str], int | None]:
    """Create the session and run the warm-up; the session, its providers and its peak RSS growth."""
    with _session_source(p.source) as src:
        _release_memory()
        reset = _reset_peak()
        rss0 = _proc_status("VmRSS")
        try:
            sess = make_session(src, device=device, threads=threads)
        except SpaError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several exception types
            raise _ort_error(p.label, exc) from None
    used = list(sess.get_providers())
    if device == "cuda" and "CUDAExecutionProvider" not in used:
        raise SpaError(f"--device cuda: onnxruntime could not use the CUDA provider for {p.label} "
                       f"(session providers: {', '.join(used)}); is a GPU with matching CUDA/cuDNN present?")
    try:
        for _ in range(warmup):
            sess.run(None, p.feeds)
    except Exception as exc:  # noqa: BLE001
        raise _ort_error(p.label, exc) from None
    hwm = _proc_status("VmHWM")
    growth = max(0, hwm - rss0) if reset and hwm is not None and rss0 is not None else None
    return sess, used, growth


CHUNK = 10
"""Timed runs per model per turn when several models are measured."""
SETTLE_S = 0.1
"""Pause before each turn when several models are measured. onnxruntime's idle intra-op
threads keep spinning for tens of milliseconds after a run; without the pause, the next model's
first runs share the CPU with the previous model's spinning threads (measured: up to 2x slower
with 2 threads on 2 cores)."""


def bench_models(
    models: Sequence[ModelLike],
    *,
    device: str = "cpu",
    threads: int = 0,
    warmup: int = 5,
    runs: int = 50,
    batch: int | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    seconds: float | None = None,
    seed: int = 0,
    names: Sequence[str | None] | None = None,
) -> list[BenchResult]:
    """Latency, throughput, params, MACs, size and peak memory of each model in onnxruntime.

    ``threads`` sets onnxruntime's intra-op threads (0: its default, one per physical core);
    ``device`` is "cpu", "cuda" (CUDA provider, CPU for unsupported ops) or "auto" (CUDA where it
    works, else the CPU with a warning; results name the device used). Inputs are
    ``inputs`` (arrays keyed by input name, checked against each model) or seeded random data
    of ``shapes`` (whole shapes by input name) with ``batch`` on a dynamic axis 0: every model
    gets the same data. Each session is created and gets ``warmup`` untimed runs; then the
    timed runs go round the models in turns of :data:`CHUNK` runs, so that a busy machine slows
    them all alike, until each has ``runs`` (or has spent ``seconds``; at least one run). With
    several models each turn starts with a :data:`SETTLE_S` pause and one untimed run.
    ``names`` label the results (default: the path, or the graph name).
    """
    _check_options(warmup, runs, threads, batch, seconds)
    if inputs is not None and (shapes or batch is not None):
        raise InvalidArgumentError("--inputs gives the data and its shapes: do not combine it with --shape or --batch")
    labels = list(names) if names is not None else [None] * len(models)
    if len(labels) != len(models):
        raise InvalidArgumentError(f"{len(labels)} names for {len(models)} models")
    device = resolve_device(device)  # fails clearly before any work when CUDA is missing
    preps = [_prepare(m, n, batch, shapes, inputs, seed) for m, n in zip(models, labels)]
    _prime_runtime(device)
    opened = [_open(p, device, threads, warmup) for p in preps]
    times: list[list[float]] = [[] for _ in preps]
    spent = [0.0] * len(preps)
    active = list(range(len(preps)))
    while active:
        for i in list(active):
            sess, feeds = opened[i][0], preps[i].feeds
            if len(preps) > 1:
                time.sleep(SETTLE_S)
                try:
                    sess.run(None, feeds)
                except Exception as exc:  # noqa: BLE001
                    raise _ort_error(preps[i].label, exc) from None
            for _ in range(CHUNK):
                t0 = time.perf_counter_ns()
                try:
                    sess.run(None, feeds)
                except Exception as exc:  # noqa: BLE001
                    raise _ort_error(preps[i].label, exc) from None
                dt = (time.perf_counter_ns() - t0) / 1e6
                times[i].append(dt)
                spent[i] += dt / 1000.0
                if len(times[i]) >= runs or (seconds is not None and spent[i] >= seconds):
                    active.remove(i)
                    break
    results = []
    for p, (_, used, growth), t in zip(preps, opened, times):
        log.debug("%s: %d runs, median %.3f ms on %s", p.label, len(t), float(np.median(t)), used)
        results.append(BenchResult(model=p.label, device=device, providers=used, threads=threads, batch=p.batch,
                                   input_shapes=p.input_shapes, warmup=warmup, times_ms=t, params=p.cost.params,
                                   macs=p.cost.macs, size_bytes=p.size, peak_rss_growth_bytes=growth))
    del opened
    _release_memory()
    return results


def bench_model(model: ModelLike, *, name: str | None = None, **kwargs: Any) -> BenchResult:
    """:func:`bench_models` for one model; same keywords, plus ``name`` for its label."""
    return bench_models([model], names=[name], **kwargs)[0]


# ---- comparison and formatting -------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 and a > 0 else None


def compare(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    """Each result as a dict plus ``speedup`` (baseline median / its median) and
    ``ideal_speedup`` (baseline MACs / its MACs); the first result is the baseline."""
    base = results[0]
    out = []
    for r in results:
        d = r.to_dict()
        d["speedup"] = _ratio(base.median_ms, r.median_ms)
        d["ideal_speedup"] = _ratio(base.macs, r.macs)
        out.append(d)
    return out


def environment() -> dict[str, Any]:
    """Versions and machine, for a benchmark record."""

    return {"spa": __version__, "onnxruntime": _ort().__version__, "onnx": onnx.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}


def to_json(results: Sequence[BenchResult]) -> dict[str, Any]:
    """The ``spa bench --json`` document."""
    return {"format": FORMAT, "environment": environment(), "memory_note": MEMORY_NOTE,
            "models": compare(results)}


def threads_text(threads: int) -> str:
    return f"{threads} intra-op threads" if threads else "onnxruntime's default intra-op threads (one per physical core)"


def settings_line(r: BenchResult) -> str:
    return (f"onnxruntime {_ort().__version__}, {r.providers[0]}, {threads_text(r.threads)}, "
            f"batch {r.batch}, {r.warmup} warm-up + {r.runs} timed runs")


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def format_table(results: Sequence[BenchResult]) -> str:
    """A Markdown table (readable on a console too); the first model is the baseline."""
    rows = compare(results)
    head = ["model", "inputs", "median ms", "p90 ms", "min ms", "inf/s", "speedup", "ideal (MACs)",
            "params", "MACs", "size", "peak RSS +"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in rows:
        shapes = ", ".join("x".join(map(str, s)) for s in d["input_shapes"].values())
        cells = [d["model"], shapes, f"{d['median_ms']:.3f}", f"{d['p90_ms']:.3f}", f"{d['min_ms']:.3f}",
                 f"{d['throughput']:.1f}", _x(d["speedup"]), _x(d["ideal_speedup"]), _si(d["params"]),
                 _si(d["macs"]), _bytes(d["size_bytes"]), _bytes(d["peak_rss_growth_bytes"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prune_bench(before: BenchResult, after: BenchResult) -> dict[str, Any]:
    """The ``bench`` section of a pruning report: latency before and after, measured and ideal speedup."""
    keep = ("median_ms", "p90_ms", "min_ms", "throughput", "peak_rss_growth_bytes", "size_bytes")
    return {
        "device": before.device, "providers": before.providers, "threads": before.threads,
        "batch": before.batch, "input_shapes": before.input_shapes, "warmup": before.warmup,
        "runs": before.runs,
        "before": {k: v for k, v in before.to_dict().items() if k in keep},
        "after": {k: v for k, v in after.to_dict().items() if k in keep},
        "measured_speedup": _ratio(before.median_ms, after.median_ms),
        "ideal_speedup": _ratio(before.macs, after.macs),
    }


def format_prune_bench(d: Mapping[str, Any]) -> str:
    """Console lines for :func:`prune_bench`'s dict."""
    b, a = d["before"], d["after"]
    return (f"latency (median of {d['runs']} runs, batch {d['batch']}, {d['providers'][0]}, "
            f"{threads_text(d['threads'])}): {b['median_ms']:.3f} ms -> {a['median_ms']:.3f} ms\n"
            f"speedup: measured {_x(d['measured_speedup'])}, ideal (MACs before / after) {_x(d['ideal_speedup'])}")
