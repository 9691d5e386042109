"""Pruning-speed benchmark: how long SPA takes to prune ResNet-50- and MobileNetV2-shaped models.

For every benchmark model (``models.zoo.BENCHMARKS``), exported with the TorchScript and the
dynamo exporter, it measures

* the in-process *pruning work*: ``load_model`` -> ``prune(ratio, criterion)`` -> ``save_model``,
  with the stages ``report.seconds`` gives (analyze / score / rewrite / measure) plus load and save;
* the whole CLI process: ``spa prune MODEL --ratio R -o OUT -q`` run as a subprocess;
* with ``--detail``, the cost of the checks inside ``prune`` on the pruned model: the full
  ``onnx.checker`` pass, onnxruntime session creation and one run, and shape inference.

Every figure is the median of ``--runs`` runs after one warm-up run. Models are exported into a
temporary folder (removed afterwards) unless ``--cache DIR`` names a folder to reuse. Exports run
in a subprocess so that torch is never imported into the measuring process.

    python -m benchmarks.prune_speed [--runs 3] [--cache DIR] [--json FILE] [--detail]
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import onnx

import spa
from spa.model.runtime import make_session, random_inputs, run

log = logging.getLogger("benchmarks.prune_speed")

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS: tuple[str, ...] = ("resnet50_like", "mobilenetv2_like")
EXPORTERS: tuple[str, ...] = ("ts", "dynamo")
# Targets (seconds) on the reference machine (2 CPU cores), keyed by model name.
WORK_TARGETS: dict[str, float] = {"resnet50_like": 2.0}
CLI_TARGETS: dict[str, float] = {"resnet50_like": 4.0}
STAGES: tuple[str, ...] = ("load", "analyze", "score", "rewrite", "measure", "save")

T = TypeVar("T")


@dataclass
class Result:
    model: str
    exporter: str
    file: str
    file_bytes: int
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    groups_pruned: int = 0
    work_s: float = 0.0
    stages_s: dict[str, float] = field(default_factory=dict)
    work_runs_s: list[float] = field(default_factory=list)
    cli_s: float | None = None
    cli_runs_s: list[float] = field(default_factory=list)
    detail_s: dict[str, float] = field(default_factory=dict)
    work_target_s: float | None = None
    cli_target_s: float | None = None

    @property
    def work_ok(self) -> bool | None:
        return None if self.work_target_s is None else self.work_s < self.work_target_s

    @property
    def cli_ok(self) -> bool | None:
        if self.cli_target_s is None or self.cli_s is None:
            return None
        return self.cli_s < self.cli_target_s


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def export_model(name: str, exporter: str, folder: Path) -> Path:
    """``folder/<name>.<exporter>.onnx``, exported in a subprocess unless it already exists."""
    path = folder / f"{name}.{exporter}.onnx"
    if path.exists() and path.stat().st_size > 0:
        log.info("reusing %s", path)
        return path
    log.info("exporting %s with the %s exporter to %s", name, exporter, path)
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING); "
        "from models.build_zoo import export_to; "
        "export_to(sys.argv[1], sys.argv[2], exporter=sys.argv[3])"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, name, str(path), exporter], cwd=REPO_ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"export of {name} ({exporter}) failed:\n{proc.stderr[-4000:]}")
    log.info("exported %s in %.1f s (%.1f MB)", path.name, time.perf_counter() - t0, path.stat().st_size / 1e6)
    return path


# ---------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def prune_once(path: Path, out: Path, ratio: float, criterion: str) -> tuple[dict[str, float], spa.PruneResult]:
    """One load -> prune -> save; returns the per-stage seconds and the prune result."""
    model, t_load = _timed(lambda: spa.load_model(path))
    result, t_prune = _timed(lambda: spa.prune(model, ratio=ratio, criterion=criterion))
    _, t_save = _timed(lambda: spa.save_model(result.model, out))
    stages = {"load": t_load, **{k: result.report.seconds.get(k, 0.0) for k in STAGES[1:-1]}, "save": t_save}
    stages["total"] = t_load + t_prune + t_save
    stages["prune_unaccounted"] = t_prune - sum(result.report.seconds.values())
    return stages, result


def bench_work(path: Path, out: Path, ratio: float, criterion: str, runs: int, res: Result) -> None:
    log.info("%s: warm-up prune", path.name)
    _, result = prune_once(path, out, ratio, criterion)
    rep = result.report
    res.params_before, res.params_after = rep.before.params, rep.after.params
    res.macs_before, res.macs_after = rep.before.macs, rep.after.macs
    res.groups_pruned = rep.groups_pruned
    samples: list[dict[str, float]] = []
    for i in range(runs):
        stages, _ = prune_once(path, out, ratio, criterion)
        log.info("%s: prune run %d/%d: %.2f s", path.name, i + 1, runs, stages["total"])
        samples.append(stages)
    res.work_runs_s = [s["total"] for s in samples]
    res.work_s = statistics.median(res.work_runs_s)
    res.stages_s = {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def _spa_command() -> list[str]:
    exe = shutil.which("spa")
    return [exe] if exe else [sys.executable, "-m", "spa"]


def bench_cli(path: Path, out: Path, ratio: float, runs: int, res: Result) -> None:
    cmd = [*_spa_command(), "prune", str(path), "--ratio", str(ratio), "-o", str(out), "-q"]
    times: list[float] = []
    for i in range(runs + 1):  # first run is the warm-up (page cache, .pyc files)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        if i:
            times.append(dt)
            log.info("%s: CLI run %d/%d: %.2f s", path.name, i, runs, dt)
    res.cli_runs_s = times
    res.cli_s = statistics.median(times)


def bench_detail(path: Path, ratio: float, criterion: str, runs: int, res: Result) -> None:
    """Median cost of the individual checks ``prune`` performs, on the original and pruned model."""
    original = spa.load_model(path)
    pruned = spa.prune(original, ratio=ratio, criterion=criterion).model
    probes: dict[str, Callable[[], object]] = {
        "onnx.load": lambda: onnx.load(str(path)),
        "check_model(full_check=False) orig": lambda: onnx.checker.check_model(original, full_check=False),
        "infer_shapes(data_prop) orig": lambda: onnx.shape_inference.infer_shapes(original, data_prop=True),
        "infer_shapes(data_prop) pruned": lambda: onnx.shape_inference.infer_shapes(pruned, data_prop=True),
        "check_model(full_check=True) pruned": lambda: onnx.checker.check_model(pruned, full_check=True),
        "SerializeToString pruned": lambda: pruned.SerializeToString(),
        "ort session create pruned": lambda: make_session(pruned),
    }
    samples: dict[str, list[float]] = {k: [] for k in probes}
    samples["ort run pruned (batch 1)"] = []
    feeds = random_inputs(pruned, seed=0)
    for i in range(runs + 1):
        for name, fn in probes.items():
            value, dt = _timed(fn)
            if i:
                samples[name].append(dt)
            if name == "ort session create pruned":
                _, dt_run = _timed(lambda: run(value, feeds))  # noqa: B023 - used immediately
                if i:
                    samples["ort run pruned (batch 1)"].append(dt_run)
    res.detail_s = {k: statistics.median(v) for k, v in samples.items()}


def bench_startup(runs: int) -> float:
    """Median wall time of ``spa --version``: interpreter start plus ``import spa``."""
    cmd = [*_spa_command(), "--version"]
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------


def _si(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _vs(value: float | None, target: float | None) -> str:
    if value is None:
        return "-"
    if target is None:
        return f"{value:.2f}"
    return f"{value:.2f} {'✅' if value < target else '❌'} (<{target:g})"


def markdown(results: Sequence[Result], runs: int, startup_s: float | None) -> str:
    head = ["model", "exporter", "params", "MACs", *STAGES, "pruning work s", "CLI process s"]
    lines = [
        f"SPA prune speed: ratio 0.4, criterion l1, median of {runs} runs after 1 warm-up; "
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}, onnx {onnx.__version__}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in results:
        cells = [
            r.model,
            r.exporter,
            f"{_si(r.params_before)}→{_si(r.params_after)}",
            f"{_si(r.macs_before)}→{_si(r.macs_after)}",
            *(f"{r.stages_s.get(s, 0.0):.2f}" for s in STAGES),
            _vs(r.work_s, r.work_target_s),
            _vs(r.cli_s, r.cli_target_s),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if startup_s is not None:
        lines += ["", f"`spa --version` (interpreter + import spa): {startup_s:.2f} s"]
    details = [r for r in results if r.detail_s]
    if details:
        names = list(details[0].detail_s)
        lines += [
            "",
            "Checks inside prune (seconds, median):",
            "",
            "| step | " + " | ".join(f"{r.model} {r.exporter}" for r in details) + " |",
            "|---|" + "|".join("---" for _ in details) + "|",
        ]
        for n in names:
            lines.append(f"| {n} | " + " | ".join(f"{r.detail_s.get(n, 0.0):.3f}" for r in details) + " |")
    return "\n".join(lines)


def to_json(results: Sequence[Result], runs: int, startup_s: float | None) -> dict[str, object]:
    rows = []
    for r in results:
        d = asdict(r)
        d["work_ok"], d["cli_ok"] = r.work_ok, r.cli_ok
        rows.append(d)
    return {
        "runs": runs,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "onnx": onnx.__version__,
        "startup_s": startup_s,
        "results": rows,
    }


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.prune_speed", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="measured runs per figure, after 1 warm-up (default 3)")
    p.add_argument("--cache", type=Path, help="folder to keep exported models in and reuse (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--exporters", nargs="+", default=list(EXPORTERS), choices=EXPORTERS)
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--no-cli", action="store_true", help="skip the CLI-process measurement")
    p.add_argument("--detail", action="store_true", help="also time the checker, onnxruntime and shape inference")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    tmp = Path(tempfile.mkdtemp(prefix="spa-bench-"))
    cache = args.cache if args.cache else tmp
    cache.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    try:
        startup_s = None if args.no_cli else bench_startup(args.runs)
        for name in args.models:
            for exporter in args.exporters:
                path = export_model(name, exporter, cache)
                res = Result(
                    name,
                    exporter,
                    path.name,
                    path.stat().st_size,
                    work_target_s=WORK_TARGETS.get(name),
                    cli_target_s=CLI_TARGETS.get(name),
                )
                out = tmp / f"{name}.{exporter}.pruned.onnx"
                bench_work(path, out, args.ratio, args.criterion, args.runs, res)
                if not args.no_cli:
                    bench_cli(path, tmp / f"{name}.{exporter}.cli.onnx", args.ratio, args.runs, res)
                if args.detail:
                    bench_detail(path, args.ratio, args.criterion, args.runs, res)
                results.append(res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(results, args.runs, startup_s))
    if args.json:
        args.json.write_text(json.dumps(to_json(results, args.runs, startup_s), indent=1) + "\n")
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    main()
