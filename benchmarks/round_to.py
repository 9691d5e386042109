"""Channel rounding benchmark: CPU latency after pruning with ``--round-to 1``, ``8``, ``16`` and ``auto``.

Every model is pruned in memory at ratio 0.4 (criterion l1) once per rounding; then the original
and the pruned models are timed together by :func:`spa.report.bench.bench_models` (interleaved turns,
same inputs, onnxruntime CPU provider, ``--threads`` intra-op threads). The table gives, per
rounding, the measured speedup over the original and the ideal one (MACs before / after); the
summary gives geometric means over the committed zoo (32x32 inputs) and over the ResNet-50- and
MobileNetV2-shaped benchmark models (224x224), which are exported once with torch into
``--cache`` (default: a temporary folder).

    python -m benchmarks.round_to [--threads 2] [--runs 30] [--cache DIR] [--no-zoo] [--no-large]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

import spa
import spa.pipeline.api
from spa.planning import selection
from spa.planning.selection import check_round_to
from spa.records import Selection
from spa.report.bench import bench_models

log = logging.getLogger("benchmarks.round_to")

REPO_ROOT = Path(__file__).resolve().parent.parent
ZOO = REPO_ROOT / "models" / "zoo"
ROUNDINGS: tuple[int | str, ...] = (1, 8, 16, "auto")
RATIO = 0.4
LARGE = ("resnet50_like", "mobilenetv2_like")


@dataclass
class Row:
    model: str
    kind: str  # "zoo" or "large"
    original_ms: float
    median_ms: dict[int | str, float] = field(default_factory=dict)
    speedup: dict[int | str, float] = field(default_factory=dict)
    ideal: dict[int | str, float] = field(default_factory=dict)
    kept_fraction: dict[int | str, float] = field(default_factory=dict)  # params after / before


def measure(path: Path, kind: str, threads: int, warmup: int, runs: int,
            roundings: Sequence[int | str] = ROUNDINGS, ratio: float = RATIO) -> Row:
    original = spa.load_model(path)
    pruned, costs = [], {}
    for r in roundings:
        model, _, report = _prune(original, ratio, r)
        pruned.append(model)
        costs[r] = report
    results = bench_models([original, *pruned], names=["original", *(f"round-to {r}" for r in roundings)],
                           threads=threads, warmup=warmup, runs=runs)
    base = results[0]
    row = Row(path.name, kind, base.median_ms)
    for r, res in zip(roundings, results[1:]):
        rep = costs[r]
        row.median_ms[r] = res.median_ms
        row.speedup[r] = base.median_ms / res.median_ms
        row.ideal[r] = rep.before.macs / max(rep.after.macs, 1)
        row.kept_fraction[r] = rep.after.params / max(rep.before.params, 1)
    log.info("%s: original %.3f ms; %s", path.name, base.median_ms,
             ", ".join(f"round-to {r}: {row.speedup[r]:.2f}x (ideal {row.ideal[r]:.2f}x)" for r in roundings))
    return row


def _prune(model: onnx.ModelProto, ratio: float, rounding: int | str) -> spa.pipeline.api.PruneResult:
    """``spa.prune`` with ``round_to=rounding``; ``"auto>=N"`` is auto with N as its minimum group size."""
    if isinstance(rounding, str) and rounding.startswith("auto>="):
        saved = selection.AUTO_MIN_UNITS
        selection.AUTO_MIN_UNITS = int(rounding[len("auto>="):])
        try:
            return spa.prune(model, ratio=ratio, selection=Selection(round_to="auto"))
        finally:
            selection.AUTO_MIN_UNITS = saved
    return spa.prune(model, ratio=ratio, selection=Selection(round_to=rounding))


def _rounding(text: str) -> int | str:
    """A --round-to value, or ``auto>=N``: auto rounding in groups of at least N units (to compare policies)."""
    if text.startswith("auto>=") and text[len("auto>="):].isdigit():
        return text
    return check_round_to(text)


def _gmean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def table(rows: Sequence[Row], roundings: Sequence[int | str] = ROUNDINGS) -> str:
    head = ["model", "original ms"] + [f"round-to {r}: ms / speedup / ideal" for r in roundings]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.model, f"{row.original_ms:.3f}"]
        cells += [f"{row.median_ms[r]:.3f} / {row.speedup[r]:.2f}x / {row.ideal[r]:.2f}x" for r in roundings]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: Sequence[Row], roundings: Sequence[int | str] = ROUNDINGS) -> str:
    head = ["models", "n"] + [f"round-to {r}: speedup / ideal / measured÷ideal" for r in roundings]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, label in (("zoo", "zoo (32x32, batch 1)"), ("large", "ResNet-50 / MobileNetV2 shapes (224x224)")):
        sel = [row for row in rows if row.kind == kind]
        if not sel:
            continue
        cells = [label, str(len(sel))]
        for r in roundings:
            s, i = _gmean([x.speedup[r] for x in sel]), _gmean([x.ideal[r] for x in sel])
            cells.append(f"{s:.2f}x / {i:.2f}x / {s / i:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.round_to", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    p.add_argument("--roundings", type=_rounding, nargs="+", default=list(ROUNDINGS),
                   help="--round-to values (default 1 8 16 auto); auto>=N compares auto with another minimum "
                        f"group size than {selection.AUTO_MIN_UNITS}")
    p.add_argument("--ratio", type=float, default=RATIO, help=f"pruning ratio (default {RATIO})")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=30, help="timed runs per model (default 30)")
    p.add_argument("--cache", type=Path, help="folder for the exported 224x224 models (default: a temp folder)")
    p.add_argument("--no-zoo", action="store_true", help="skip the committed zoo")
    p.add_argument("--no-large", action="store_true", help="skip the ResNet-50 / MobileNetV2-shaped models")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    rows: list[Row] = []
    if not args.no_zoo:
        for path in sorted(ZOO.glob("*.onnx")):
            rows.append(measure(path, "zoo", args.threads, args.warmup, args.runs, args.roundings, args.ratio))
    if not args.no_large:
        from benchmarks.prune_speed import export_model

        tmp = Path(tempfile.mkdtemp(prefix="spa-round-"))
        try:
            folder = args.cache or tmp
            folder.mkdir(parents=True, exist_ok=True)
            for name in LARGE:
                rows.append(measure(export_model(name, "ts", folder), "large", args.threads, args.warmup, args.runs,
                                    args.roundings, args.ratio))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"Latency after pruning at ratio {args.ratio} (l1) with each --round-to; onnxruntime CPU provider, "
          f"{args.threads} threads, batch 1, median of {args.runs} interleaved runs after {args.warmup} warm-up; "
          f"onnx {onnx.__version__}; load average {os.getloadavg()[0]:.1f}\n")
    print(table(rows, args.roundings))
    print("\nGeometric means:\n")
    print(summary(rows, args.roundings))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    main()
