"""``spa bench``: onnxruntime latency of models side by side."""

from __future__ import annotations

import argparse
import json

from spa.cli.commands.common import DEVICE_HELP, DEVICES, EXIT_OK, add_common, check_seed, command_doc, emit, shape
from spa.errors import InvalidArgumentError
from spa.report.bench import MEMORY_NOTE, bench_models, format_table, load_inputs, settings_line, to_json


def run(args: argparse.Namespace) -> int:
    """Measure onnxruntime latency and throughput of one or more models, side by side.

    Each model gets warm-up runs, then timed runs (median, p90, min) that go round the models ten
    at a time, on the same seeded random inputs (or --inputs); params, MACs, size on disk and
    peak memory are shown too. The first model is the baseline: speedup is its median latency
    over each model's, ideal is its MACs over each model's.
    """

    check_seed(args.seed)
    shapes: dict[str, list[int]] = {}
    for name, dims in args.shape:
        if name in shapes and shapes[name] != dims:
            raise InvalidArgumentError(f"--shape {name} given twice with different sizes")
        shapes[name] = dims
    inputs = load_inputs(args.inputs) if args.inputs else None
    results = bench_models(args.models, device=args.device, threads=args.threads, warmup=args.warmup, runs=args.runs,
                           batch=args.batch, shapes=shapes or None, inputs=inputs, seconds=args.seconds,
                           seed=args.seed)
    if args.json:
        print(json.dumps(to_json(results), indent=1))
        return EXIT_OK
    emit(args, settings_line(results[0]))
    emit(args, format_table(results))
    emit(args, f"{MEMORY_NOTE}; MACs per inference at batch 1")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help=command_doc(run).splitlines()[0], description=command_doc(run))
    p.add_argument("models", nargs="+", metavar="MODEL", help=".onnx files; the first is the baseline for speedups")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per model first (default 5)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="stop a model's timed runs once they have taken S seconds (at least one run)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="size of a dynamic batch axis 0 (default 1); throughput is B / median latency")
    p.add_argument("--shape", action="append", type=shape, default=[], metavar="NAME:D1xD2x...",
                   help="whole shape of input NAME, e.g. input:1x3x224x224 (repeatable); sets dynamic sizes")
    p.add_argument("--inputs", metavar="DATA", help="feed these arrays instead of random data: .npz keyed by input name")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads (default 0: onnxruntime's choice, one per physical core)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help=DEVICE_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--json", action="store_true", help="print JSON alone on stdout (tables and status lines go to stderr)")
    add_common(p)
    p.set_defaults(func=run)
    return p
