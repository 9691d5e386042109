"""Scale benchmark: time and peak memory of ``spa prune --ratio 0.4`` on large models, as a process.

Models (weights random, built on the fly into a temporary folder unless ``--keep DIR``):

* ``resnet50`` - the ResNet-50-shaped model of ``models/build_zoo.py`` (TorchScript export, in a
  subprocess; needs the ``torch`` extra once);
* ``vit-b16``, ``bert-base`` - built directly as ONNX (:mod:`benchmarks.scale_models`);
* ``gpt-125m`` ... ``gpt-1b`` - GPT-style decoders with their weights in ONNX external data,
  written tensor by tensor (see :data:`benchmarks.scale_models.DECODER_SIZES`).

For each model it runs ``spa prune MODEL --ratio 0.4 -o OUT --report R -q`` as a child process and
records the wall time from process start to exit (the output is saved by then) and the child's
peak resident memory (``ru_maxrss`` from ``wait4``), beside the model's weight bytes, parameters
and nodes, and what was pruned (from the report). ``--round-trip`` also re-saves the largest
decoder with ``--ratio 0`` and compares every tensor of the written external data with the
input's, which proves a model over 2 GB round-trips exactly.

    python -m benchmarks.scale [--models resnet50 vit-b16 bert-base gpt-1b] [--growth] [--round-trip]
                               [--keep DIR] [--runs 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

log = logging.getLogger("benchmarks.scale")

REPO_ROOT = Path(__file__).resolve().parent.parent
RATIO = 0.4
#: Targets on the reference machine (2 cores, 24 GB): seconds, and peak memory / weight bytes.
TIME_TARGETS = {"resnet50": 2.0, "vit-b16": 5.0, "bert-base": 5.0, "gpt-1b": 120.0}
MEMORY_TARGETS = {"gpt-1b": 2.0}
MAIN = ("resnet50", "vit-b16", "bert-base", "gpt-1b")
GROWTH = ("gpt-125m", "gpt-350m", "gpt-760m", "gpt-1b")


@dataclass
class Run:
    model: str
    file_bytes: int  # model file plus external data
    weight_bytes: int  # float initializers
    params: int
    nodes: int
    external_data: bool
    seconds: float = 0.0
    seconds_runs: list[float] = field(default_factory=list)
    peak_rss_bytes: int = 0
    params_after: int = 0
    groups_pruned: int = 0
    groups_blocked: int = 0
    units_removed: int = 0
    stages_s: dict[str, float] = field(default_factory=dict)
    output_bytes: int = 0

    @property
    def memory_ratio(self) -> float:
        return self.peak_rss_bytes / max(self.weight_bytes, 1)


# ---- models ------------------------------------------------------------------------------


def build(name: str, folder: Path) -> Path:
    """``folder/<name>.onnx``, built unless it is there already."""
    from benchmarks.scale_models import DECODER_SIZES, bert, decoder, vit

    path = folder / f"{name}.onnx"
    if path.exists():
        log.info("reusing %s", path)
        return path
    t0 = time.perf_counter()
    if name == "resnet50":
        from benchmarks.prune_speed import export_model

        exported = export_model("resnet50_like", "ts", folder)
        os.replace(exported, path)
    elif name == "vit-b16":
        vit(path)
    elif name == "bert-base":
        bert(path)
    elif name in DECODER_SIZES:
        d, layers = DECODER_SIZES[name]
        decoder(path, d_model=d, layers=layers)
    else:
        raise SystemExit(f"unknown model {name!r}")
    log.info("built %s in %.1f s", path, time.perf_counter() - t0)
    return path


def describe(name: str, path: Path) -> Run:
    m = onnx.load(str(path), load_external_data=False)
    floats = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8}
    params = weight_bytes = 0
    for t in m.graph.initializer:
        if t.data_type in floats:
            n = int(np.prod(t.dims, dtype=np.int64))
            params += n
            weight_bytes += n * floats[t.data_type]
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    return Run(name, _file_bytes(path), weight_bytes, params, len(m.graph.node), external)


def _file_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


# ---- measuring ---------------------------------------------------------------------------


def _spa() -> list[str]:
    exe = shutil.which("spa")
    return [exe] if exe else [sys.executable, "-m", "spa"]


def run_child(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process; raises on a non-zero exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{(out + err).decode()[-4000:]}")
    return seconds, usage.ru_maxrss * 1024


def measure(name: str, path: Path, work: Path, runs: int) -> Run:
    res = describe(name, path)
    out, report = work / f"{name}.pruned.onnx", work / f"{name}.report.json"
    cmd = [*_spa(), "prune", str(path), "--ratio", str(RATIO), "-o", str(out), "--report", str(report), "-q"]
    for i in range(runs):
        seconds, rss = run_child(cmd)
        res.seconds_runs.append(seconds)
        res.peak_rss_bytes = max(res.peak_rss_bytes, rss)
        log.info("%s run %d/%d: %.2f s, peak RSS %.2f GB", name, i + 1, runs, seconds, rss / 1e9)
    res.seconds = statistics.median(res.seconds_runs)
    r = json.loads(report.read_text())
    res.params_after = r["after"]["params"]
    res.groups_pruned, res.groups_blocked = r["groups_pruned"], len(r["blocked"])
    res.units_removed, res.stages_s = r["units_removed"], r["seconds"]
    res.output_bytes = _file_bytes(out)
    for p in (out, out.with_name(out.name + ".data"), report):
        p.unlink(missing_ok=True)
    return res


def round_trip(path: Path, work: Path) -> dict[str, object]:
    """``spa prune --ratio 0`` (load, check, save) and a tensor-by-tensor comparison with the input."""
    out = work / "roundtrip.onnx"
    cmd = [*_spa(), "prune", str(path), "--ratio", "0", "-o", str(out), "-q"]
    seconds, rss = run_child(cmd)
    onnx.checker.check_model(str(out), full_check=True)  # by path: the model is over 2 GB
    a, b = onnx.load(str(path), load_external_data=False), onnx.load(str(out), load_external_data=False)
    ta, tb = {t.name: t for t in a.graph.initializer}, {t.name: t for t in b.graph.initializer}
    same = set(ta) == set(tb)
    compared = 0
    for name, t in ta.items():
        if not same:
            break
        same = _tensor(t, path.parent).tobytes() == _tensor(tb[name], out.parent).tobytes()
        compared += 1
    size = _file_bytes(out)
    for p in (out, out.with_name(out.name + ".data")):
        p.unlink(missing_ok=True)
    return {"model": path.name, "bytes": size, "tensors": compared, "identical": same, "seconds": seconds,
            "peak_rss_bytes": rss}


def _tensor(t: onnx.TensorProto, base: Path) -> np.ndarray:
    """One initializer's values, reading external data from its file directly."""
    info = {e.key: e.value for e in t.external_data}
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return onnx.numpy_helper.to_array(t)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    count = int(info["length"]) // dtype.itemsize
    return np.fromfile(base / info["location"], dtype=dtype, count=count, offset=int(info.get("offset", 0)))


def startup_rss() -> tuple[float, int]:
    """``spa --version``: interpreter start plus ``import spa``."""
    return run_child([*_spa(), "--version"])


# ---- output ------------------------------------------------------------------------------


def _si(n: float, unit: str = "") -> str:
    for suffix, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _vs(value: float, target: float | None, fmt: str) -> str:
    text = fmt.format(value)
    return text if target is None else f"{text} {'✅' if value < target else '❌'} (<{target:g})"


def table(results: Sequence[Run], with_targets: bool = True) -> str:
    head = ["model", "params", "nodes", "weights", "external data", "pruned params", "groups pruned / blocked",
            "time s", "peak RSS", "peak / weights"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        tt = TIME_TARGETS.get(r.model) if with_targets else None
        mt = MEMORY_TARGETS.get(r.model) if with_targets else None
        lines.append("| " + " | ".join([
            r.model, _si(r.params), str(r.nodes), _si(r.weight_bytes, "B"), "yes" if r.external_data else "no",
            f"{_si(r.params_after)} ({r.params_after / max(r.params, 1):.0%})",
            f"{r.groups_pruned} / {r.groups_blocked}", _vs(r.seconds, tt, "{:.2f}"),
            _si(r.peak_rss_bytes, "B"), _vs(r.memory_ratio, mt, "{:.2f}x"),
        ]) + " |")
    return "\n".join(lines)


def stages(results: Sequence[Run]) -> str:
    names = ["analyze", "score", "rewrite", "measure"]
    head = ["model", *names, "in prune", "rest (start, load, save)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        inside = sum(r.stages_s.get(n, 0.0) for n in names)
        lines.append("| " + " | ".join([r.model, *(f"{r.stages_s.get(n, 0.0):.2f}" for n in names), f"{inside:.2f}",
                                         f"{r.seconds - inside:.2f}"]) + " |")
    return "\n".join(lines)


def growth(results: Sequence[Run]) -> str:
    head = ["model", "params", "nodes", "weights", "time s", "µs per 1k params", "ms per node", "peak RSS",
            "peak / weights"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lines.append("| " + " | ".join([
            r.model, _si(r.params), str(r.nodes), _si(r.weight_bytes, "B"), f"{r.seconds:.2f}",
            f"{r.seconds / r.params * 1e9:.1f}", f"{r.seconds / r.nodes * 1e3:.1f}", _si(r.peak_rss_bytes, "B"),
            f"{r.memory_ratio:.2f}x",
        ]) + " |")
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MAIN), help=f"models of the main table (default {' '.join(MAIN)})")
    p.add_argument("--growth", action="store_true", help=f"also the size-growth table over {', '.join(GROWTH)}")
    p.add_argument("--round-trip", action="store_true", help="also round-trip gpt-1b (> 2 GB) through spa --ratio 0")
    p.add_argument("--keep", type=Path, help="build models into this folder and reuse them (default: a temp folder)")
    p.add_argument("--runs", type=int, default=1, help="spa runs per model; the median time is reported (default 1)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    tmp = Path(tempfile.mkdtemp(prefix="spa-scale-"))
    folder = args.keep or tmp
    folder.mkdir(parents=True, exist_ok=True)
    doc: dict[str, object] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "onnx": onnx.__version__,
                              "ratio": RATIO}
    try:
        start_s, start_rss = startup_rss()
        doc["startup"] = {"seconds": start_s, "peak_rss_bytes": start_rss}
        main_runs = [measure(m, build(m, folder), tmp, args.runs) for m in args.models]
        doc["models"] = [asdict(r) for r in main_runs]
        growth_runs: list[Run] = []
        if args.growth:
            done = {r.model: r for r in main_runs}
            growth_runs = [done.get(m) or measure(m, build(m, folder), tmp, args.runs) for m in GROWTH]
            doc["growth"] = [asdict(r) for r in growth_runs]
        trip = round_trip(build("gpt-1b", folder), tmp) if args.round_trip else None
        doc["round_trip"] = trip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"spa prune --ratio {RATIO} as a process (start to saved file), median of {args.runs} run(s); "
          f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}")
    print(f"`spa --version` (interpreter + import spa): {start_s:.2f} s, peak RSS {_si(start_rss, 'B')}\n")
    print(table(main_runs))
    print("\nStages inside `spa prune` (report seconds):\n")
    print(stages(main_runs + [r for r in growth_runs if r not in main_runs]))
    if growth_runs:
        print("\nGrowth with model size (GPT-style decoders, external data):\n")
        print(growth(growth_runs))
    if trip:
        print(f"\nRound trip of {trip['model']} through `spa prune --ratio 0`: wrote {_si(trip['bytes'], 'B')} in "
              f"{trip['seconds']:.1f} s (peak RSS {_si(trip['peak_rss_bytes'], 'B')}); {trip['tensors']} tensors "
              f"compared: {'identical' if trip['identical'] else 'DIFFERENT'}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    main()
