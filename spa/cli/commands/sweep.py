"""``spa sweep``: prune at several ratios and tabulate (and plot) cost, latency and fidelity."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spa.cli.commands.common import (
    DEVICE_HELP,
    DEVICES,
    EXIT_OK,
    add_common,
    add_criterion_args,
    add_selection_args,
    add_shape_arg,
    calib_targets,
    check_outputs,
    check_seed,
    command_doc,
    emit,
    load_side_inputs,
    runtime_args,
    scoring_args,
    selection_args,
)
from spa.errors import InvalidArgumentError, SpaError
from spa.model.io import load_model, write_bytes_atomic
from spa.pipeline.sweep import SweepResult, parse_ratios, plot, sweep
from spa.records import Bench
from spa.report.bench import threads_text


def run(args: argparse.Namespace) -> int:
    """Prune MODEL at each of several ratios; tabulate params, MACs, latency and fidelity.

    Every ratio is pruned from the original with the same options as `spa prune` (--criterion,
    --round-to, --exclude, --global, ...). The original and every pruned model are then timed in
    onnxruntime together (interleaved, same inputs). With --calib, each pruned model's outputs
    are compared with the original's on that data (drift, top-1 agreement); with --eval, top-1
    accuracy. Prints a table; --csv, --table, --json and --plot (PNG) write it to files.
    """

    ratios = parse_ratios(args.ratios)
    check_seed(args.seed)
    if args.warmup < 0 or args.runs < 1:
        raise InvalidArgumentError(f"--warmup must be >= 0 and --runs >= 1, got {args.warmup} and {args.runs}")
    if args.threads < 0:
        raise InvalidArgumentError(f"--threads must be >= 0 (0: onnxruntime's default), got {args.threads}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise InvalidArgumentError(f"--plot {args.plot}: the plot is a PNG; give a file name ending in .png")
    model = load_model(args.model)
    inputs = [args.model] + [f for f in (args.calib, args.eval) if f]
    outputs = {flag: path for flag, path in (("--csv", args.csv), ("--table", args.table),
                                             ("--json-out", args.json_out), ("--plot", args.plot)) if path}
    check_outputs(outputs, inputs)
    if args.plot:
        _check_matplotlib()
    calib, eval_data = load_side_inputs(model, args.calib, args.eval)
    result = sweep(model, ratios, args.criterion, selection=selection_args(args),
                   scoring=scoring_args(args, calib, calib_targets(args.calib, model)), runtime=runtime_args(args),
                   bench=None if args.no_bench else Bench(warmup=args.warmup, runs=args.runs), eval_data=eval_data)
    result.model = args.model
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    doc = result.to_dict()
    files: list[tuple[str, bytes]] = []
    if args.csv:
        files.append((args.csv, result.csv().encode()))
    if args.table:
        files.append((args.table, (result.table() + "\n").encode()))
    if args.json_out:
        files.append((args.json_out, (json.dumps(doc, indent=1) + "\n").encode()))
    if args.plot:
        files.append((args.plot, plot(result)))
    written: list[Path] = []
    try:
        for path, data in files:
            write_bytes_atomic(path, data)
            written.append(Path(path))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    if args.json:
        print(json.dumps(doc, indent=1))
        return EXIT_OK
    emit(args, _header(result))
    emit(args, result.table())
    for p in written:
        emit(args, f"wrote {p}")
    return EXIT_OK


def _header(r: SweepResult) -> str:
    """The line above the table: the model and the settings every ratio was pruned and timed with."""
    line = f"{r.model}: criterion {r.criterion}, round-to {r.options['round_to']}"
    if r.options["global"]:
        line += ", global ranking"
    b = r.bench
    if b:
        line += (f"; latency: median of {b['runs']} runs after {b['warmup']} warm-up, batch {b['batch']}, "
                 f"{b['providers'][0]}, {threads_text(b['threads'])}")
    f = r.fidelity
    if f and "samples" in f:
        line += f"; fidelity on {f['data']} ({f['samples']} samples)"
    return line


def _check_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise SpaError("--plot needs matplotlib: pip install 'spa[plot]' (or pip install matplotlib)")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help=command_doc(run).splitlines()[0], description=command_doc(run))
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("--ratios", default="0.1:0.7:0.1", metavar="R",
                   help="START:STOP:STEP with STOP included (default 0.1:0.7:0.1), or a list 0.2,0.4,0.6")
    add_criterion_args(p)
    add_selection_args(p)
    p.add_argument("--prune-norm-axes", action="store_true",
                   help="also prune groups a LayerNorm normalises over (approximate)")
    p.add_argument("--prune-heads", default="whole", choices=["whole", "dims", "none"],
                   help="attention granularity, as for spa prune: whole heads (default), the same dims of every "
                        "head, or none")
    p.add_argument("--calib", metavar="DATA",
                   help="calibration inputs (.npz keyed by input name, or a folder of <input>.npy): adds drift and "
                        "top-1 agreement against the original; also obspa's statistics with --stats data, plus "
                        "'labels' (or 'targets') for taylor, snip, grasp and crop")
    p.add_argument("--stats", default="auto", choices=["auto", "moments", "synthetic", "data"],
                   help="obspa statistics, as for spa prune (default auto)")
    p.add_argument("--eval", metavar="DATA.npz", help="labelled data (see spa prune --eval): adds top-1 accuracy")
    p.add_argument("--seed", type=int, default=0, help="seed for the random criterion and the timing inputs")
    p.add_argument("--no-bench", action="store_true", help="do not time the models (cost and fidelity only)")
    add_shape_arg(p)
    p.add_argument("--device", default="cpu", choices=DEVICES, help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads (default 0: onnxruntime's choice, one per physical core)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per model (default 3)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model (default 20)")
    p.add_argument("--csv", metavar="FILE", help="write every column of every ratio as CSV")
    p.add_argument("--table", metavar="FILE", help="write the Markdown table")
    p.add_argument("--json-out", metavar="FILE", help="write the spa-sweep/1 JSON document")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG plot (needs matplotlib: pip install 'spa[plot]')")
    p.add_argument("--json", action="store_true", help="print the spa-sweep/1 JSON document instead of the table")
    add_common(p)
    p.set_defaults(func=run)
    return p
