"""The ``spa`` command line: ``prune``, ``groups``, ``verify``, ``bench`` and ``info``.

Exit codes: 0 ok (also "nothing to prune"), 1 user error, 2 usage, 3 verification failed,
4 a gate failed (``--max-drift``, ``--min-speedup``, ...). Reports go to stdout, logs to stderr;
user errors print one line and no traceback. ``spa prune`` also reads its settings from
``spa.toml`` or ``[tool.spa]`` in ``pyproject.toml`` (see :mod:`spa.config`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spa.errors import GateError, InvalidArgumentError, SpaError, VerificationError

log = logging.getLogger("spa")

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_VERIFY, EXIT_GATE = 0, 1, 2, 3, 4
PRUNE_BENCH_WARMUP, PRUNE_BENCH_RUNS = 3, 20  # `spa prune --bench`: quick, both models alike


class _Parser(argparse.ArgumentParser):
    #: Subcommand parsers by name (set on the top-level parser by :func:`build_parser`).
    subcommands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: usage error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less output (-qq: errors only)")


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _count(text: str) -> int:
    from spa.gates import parse_count

    try:
        return parse_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text: str) -> float:
    from spa.gates import parse_fraction

    try:
        return parse_fraction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_gates(p: argparse.ArgumentParser) -> None:
    """CI options of ``spa prune``: gates (exit 4, nothing written), the Markdown summary, config files."""
    g = p.add_argument_group("CI gates (a failed gate exits 4 and writes nothing)")
    g.add_argument("--max-params", type=_count, metavar="N",
                   help="fail unless the pruned model has at most N parameters (suffixes k, M, G: 2.5M)")
    g.add_argument("--max-macs", type=_count, metavar="N",
                   help="fail unless the pruned model has at most N MACs per inference (batch 1; 1.2G, 300M)")
    g.add_argument("--min-speedup", type=_ratio, metavar="X",
                   help="fail unless the measured latency speedup (median before / after) is at least X; implies --bench")
    g.add_argument("--max-drift", type=_ratio, metavar="E",
                   help="fail unless max over outputs of max|pruned - original| / max|original| is at most E, "
                        "on 8 seeded random samples (or the --calib data)")
    g.add_argument("--eval", metavar="DATA.npz",
                   help="labelled data: arrays keyed by input name plus integer 'labels'; reports top-1 accuracy "
                        "(argmax over the last axis of the first output) before and after")
    g.add_argument("--min-accuracy", type=_fraction, metavar="A",
                   help="fail unless the pruned model's top-1 accuracy on --eval is at least A (0.9 or 90%%)")
    g.add_argument("--markdown", metavar="MD", help="also write a Markdown summary for a pull-request comment")
    g.add_argument("--reports-on-fail", action="store_true",
                   help="when a gate fails, still write --report and --markdown (never the model or the plan)")
    g.add_argument("--dry-run", action="store_true", help="prune, check and gate, but do not write the pruned model")
    c = g.add_mutually_exclusive_group()
    c.add_argument("--config", metavar="FILE",
                   help="read settings from this spa.toml or pyproject.toml ([tool.spa]) instead of looking them up")
    c.add_argument("--no-config", action="store_true", help="ignore spa.toml and [tool.spa] in pyproject.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spa", description=__doc__.splitlines()[0] if __doc__ else None)
    from spa import __version__

    parser.add_argument("--version", action="version", version=f"spa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("prune", help=cmd_prune.__doc__.splitlines()[0], description=cmd_prune.__doc__)  # type: ignore[union-attr]
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("--ratio", type=_ratio, default=0.4, help="fraction of each group's channels to remove, in [0, 1) (default 0.4)")
    p.add_argument("-o", "--output", help="output .onnx (default: MODEL.pruned.onnx beside the input)")
    p.add_argument("--criterion", default="l1", help="importance criterion: l1, l2, bn-scale, random, obspa, fluctuation, activation (default l1)")
    p.add_argument("--plan", help="write the pruning plan (spa-plan/1 JSON) here")
    p.add_argument("--report", help="write the report as JSON here")
    p.add_argument("--from-plan", help="replay a saved plan instead of scoring")
    p.add_argument("--global", dest="global_ranking", action="store_true", help="rank normalised scores across groups")
    p.add_argument("--round-to", type=int, default=1, help="keep channel counts multiples of N")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="never prune groups touching a node or initializer matching PATTERN (glob; repeatable)")
    p.add_argument("--target-macs", type=_ratio, metavar="F",
                   help="find the ratio that leaves at most F (a fraction) of the original MACs; overrides --ratio")
    p.add_argument("--target-params", type=_ratio, metavar="F",
                   help="find the ratio that leaves at most F (a fraction) of the original parameters")
    p.add_argument("--prune-norm-axes", action="store_true",
                   help="also prune groups a LayerNorm normalises over (approximate: verify reports drift)")
    p.add_argument("--calib", metavar="DATA", help="calibration inputs for obspa: .npz keyed by input name, or a folder of <input>.npy")
    p.add_argument("--stats", default="auto", choices=["auto", "moments", "synthetic", "data"],
                   help="obspa statistics: moments (no data, default), synthetic (random inputs), data (--calib)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random criterion and test inputs")
    p.add_argument("--verify", action="store_true", help="check masked equivalence before writing; exit 3 on mismatch")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="onnxruntime device for checks (and --bench)")
    p.add_argument("--bench", action="store_true",
                   help=f"also time the original and the pruned model in onnxruntime ({PRUNE_BENCH_WARMUP} warm-up + "
                        f"{PRUNE_BENCH_RUNS} runs each, same inputs) and report measured vs ideal (MACs) speedup")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="intra-op threads for --bench (default 0: onnxruntime's choice, one per physical core)")
    _add_gates(p)
    _add_common(p)
    p.set_defaults(func=cmd_prune)
    parser.subcommands = {"prune": p}

    p = sub.add_parser("groups", help=cmd_groups.__doc__.splitlines()[0], description=cmd_groups.__doc__)  # type: ignore[union-attr]
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    _add_common(p)
    p.set_defaults(func=cmd_groups)

    p = sub.add_parser("verify", help=cmd_verify.__doc__.splitlines()[0], description=cmd_verify.__doc__)  # type: ignore[union-attr]
    p.add_argument("original")
    p.add_argument("pruned")
    p.add_argument("--plan", help="the plan that produced PRUNED (without it, outputs are compared as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=float, default=None, help="tolerance relative to the output's max |value| (default 1e-4)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true")
    _add_common(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help=cmd_bench.__doc__.splitlines()[0], description=cmd_bench.__doc__)  # type: ignore[union-attr]
    p.add_argument("models", nargs="+", metavar="MODEL", help=".onnx files; the first is the baseline for speedups")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per model first (default 5)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="stop a model's timed runs once they have taken S seconds (at least one run)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="size of a dynamic batch axis 0 (default 1); throughput is B / median latency")
    p.add_argument("--shape", action="append", type=_shape, default=[], metavar="NAME:D1xD2x...",
                   help="whole shape of input NAME, e.g. input:1x3x224x224 (repeatable); sets dynamic sizes")
    p.add_argument("--inputs", metavar="DATA", help="feed these arrays instead of random data: .npz keyed by input name")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads (default 0: onnxruntime's choice, one per physical core)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="onnxruntime device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--json", action="store_true", help="machine-readable output (with -q: the JSON only)")
    _add_common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help=cmd_info.__doc__.splitlines()[0], description=cmd_info.__doc__)  # type: ignore[union-attr]
    _add_common(p)
    p.set_defaults(func=cmd_info)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING - 10 * args.verbose + 10 * args.quiet
    logging.basicConfig(level=max(logging.DEBUG, min(level, logging.CRITICAL)), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s", force=True)


def _progress_bar() -> Callable[[str, int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def draw(stage: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{stage:8} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        sys.stderr.flush()

    return draw


def _out(args: argparse.Namespace, text: str) -> None:
    if args.quiet < 1:
        print(text)


def _shape(text: str) -> tuple[str, list[int]]:
    from spa.bench import parse_shape

    try:
        return parse_shape(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {seed}")


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune MODEL and write a smaller, dense, checked ONNX model.

    Removes whole channels (filters, hidden units) group by group, rewrites the graph, checks the
    result with the full ONNX checker and onnxruntime, and prints a before/after table. Gates
    (--max-params, --max-macs, --min-speedup, --max-drift, --min-accuracy) fail the run with exit
    4 and write nothing. Settings also come from spa.toml or [tool.spa] in pyproject.toml.
    """
    from spa.api import prune
    from spa.gates import GateSpec
    from spa.io import default_output_path, load_model
    from spa.plan import Plan
    from spa.selection import check_ratio

    if args.from_plan is None:
        check_ratio(args.ratio)
    _check_seed(args.seed)
    spec = GateSpec(args.max_params, args.max_macs, args.min_speedup, args.max_drift, args.min_accuracy)
    spec.check(has_eval=bool(args.eval))
    if args.min_speedup is not None:
        args.bench = True
    out = None if args.dry_run else Path(args.output) if args.output else default_output_path(args.model)
    model = load_model(args.model)
    _check_outputs(args, out)
    plan_in = Plan.load(args.from_plan) if args.from_plan else None
    calib, eval_data = _side_inputs(args, model)
    result = prune(model, args.ratio, args.criterion, global_ranking=args.global_ranking,
                   round_to=args.round_to, exclude=args.exclude, seed=args.seed, from_plan=plan_in,
                   verify_result=args.verify, device=args.device, progress=_progress_bar(),
                   stats=args.stats, calib=calib, prune_norm_axes=args.prune_norm_axes,
                   target_macs=args.target_macs, target_params=args.target_params)
    result.report.model = args.model
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    nothing = result.report.groups_prunable == 0
    nothing_msg = (f"nothing to prune in {args.model}: every group is blocked or has one channel "
                   "(run `spa groups` to see why); no output written")
    if nothing and not spec.any():
        _out(args, nothing_msg)
        return EXIT_OK
    if result.report.verification is not None and not result.report.verification["passed"]:
        _out(args, result.report.table())
        raise VerificationError(f"{result.report.verification['summary']}; nothing was written")
    bench = _prune_bench(args, model, result.model, out) if args.bench else None
    if bench is not None:
        result.report.seconds["bench"] = bench.pop("seconds")
    report_dict = result.report.to_dict()
    if bench is not None:
        report_dict["bench"] = bench
    gates = _run_gates(args, spec, model, result, bench, calib, eval_data, report_dict)
    report_dict["output"] = None
    report_dict["config"] = getattr(args, "config_file", None)
    report_dict["command"] = getattr(args, "command_line", None)
    failed = [g for g in gates if not g.passed]
    if nothing:
        from spa.gates import failure_message, format_gates

        _out(args, format_gates(gates))
        if failed:
            raise GateError(f"{failure_message(gates)}; nothing was written")
        _out(args, nothing_msg)
        return EXIT_OK
    if failed:
        from spa.gates import failure_message

        _show_prune(args, result, bench, gates)
        wrote = _write_reports(args, report_dict, result.plan) if args.reports_on_fail else []
        tail = f"only {' and '.join(map(str, wrote))} written" if wrote else "nothing was written"
        raise GateError(f"{failure_message(gates)}; {tail}")
    _save_all(args, out, result, report_dict)
    _show_prune(args, result, bench, gates)
    _out(args, f"wrote {out}" if out is not None else "dry run: no model written")
    return EXIT_OK



def _check_outputs(args: argparse.Namespace, out: Path | None) -> None:
    """Every output path is writable, none is an input, and no two are the same file."""
    from spa.io import check_output_path

    inputs = [args.model] + [f for f in (args.from_plan, args.calib, args.eval, getattr(args, "config_file", None)) if f]
    outputs: dict[str, str | Path] = {"-o/--output": out} if out is not None else {}
    for flag, path in (("--plan", args.plan), ("--report", args.report), ("--markdown", args.markdown)):
        if path:
            outputs[flag] = path
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        check_output_path(path, *inputs)
        key = Path(path).resolve()
        if key in seen:
            raise InvalidArgumentError(f"{path}: {flag} and {seen[key]} name the same file; give them different paths")
        seen[key] = flag


def _side_inputs(args: argparse.Namespace, model: Any) -> tuple[Any, Any]:
    """Calibration (--calib) and evaluation (--eval) data, checked against the model's inputs."""
    calib = eval_data = None
    if args.calib:
        from spa.calib import load_calibration

        calib = load_calibration(args.calib, model)
    if args.eval:
        from spa.gates import load_eval

        eval_data = load_eval(args.eval, model)
    return calib, eval_data


def _save_all(args: argparse.Namespace, out: Path | None, result: Any, report_dict: dict[str, Any]) -> None:
    """Write the model, plan and reports; all or nothing (a failure removes what was written)."""
    from spa.io import save_model

    written: list[Path] = []
    try:
        if out is not None:
            data_file = out.with_name(out.name + ".data")
            data_existed = data_file.exists()
            save_model(result.model, out)
            written.append(out)
            if data_file.exists() and not data_existed:
                written.append(data_file)
            result.report.output = str(out)
            report_dict["output"] = str(out)
        if args.plan:
            result.plan.save(args.plan)
            written.append(Path(args.plan))
        written += _write_reports(args, report_dict, result.plan)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise

def _run_gates(args: argparse.Namespace, spec: Any, model: Any, result: Any, bench: dict[str, Any] | None,
               calib: dict[str, Any] | None, eval_data: dict[str, Any] | None,
               report_dict: dict[str, Any]) -> list[Any]:
    """Measure what the gates need (drift, accuracy), record it in ``report_dict``, evaluate the gates."""
    from spa.gates import LABELS_KEY, accuracy, evaluate, gates_to_dicts, measure_drift

    t0 = time.perf_counter()
    drift = None
    if spec.max_drift is not None:
        drift = measure_drift(model, result.model, seed=args.seed, device=args.device, calib=calib,
                              calib_name=args.calib or "--calib")
        report_dict["drift"] = drift.to_dict()
    acc = None
    if eval_data is not None:
        acc = {"data": args.eval, "samples": int(len(eval_data[LABELS_KEY])),
               "before": accuracy(model, eval_data, args.device), "after": accuracy(result.model, eval_data, args.device)}
        report_dict["accuracy"] = acc
    if drift is not None or acc is not None:
        report_dict["seconds"]["gates"] = time.perf_counter() - t0
        result.report.seconds["gates"] = report_dict["seconds"]["gates"]
    gates = evaluate(spec, params=result.report.after.params, macs=result.report.after.macs,
                     speedup=bench.get("measured_speedup") if bench else None,
                     drift=drift.value if drift else None, accuracy=acc["after"] if acc else None)
    if gates:
        report_dict["gates"] = gates_to_dicts(gates)
        report_dict["gates_passed"] = all(g.passed for g in gates)
    return gates


def _show_prune(args: argparse.Namespace, result: Any, bench: dict[str, Any] | None, gates: list[Any]) -> None:
    """The console report of ``spa prune``: table, latency, drift and accuracy, gates."""
    if getattr(args, "config_file", None):
        _out(args, f"settings from {args.config_file}")
    _out(args, result.report.table())
    if bench is not None:
        from spa.bench import format_prune_bench

        _out(args, format_prune_bench(bench))
    if gates:
        from spa.gates import format_gates

        _out(args, format_gates(gates))


def _write_reports(args: argparse.Namespace, report_dict: dict[str, Any], plan: Any) -> list[Path]:
    """Write --report (JSON) and --markdown, each atomically; returns what was written."""
    from spa.io import write_text_atomic

    written: list[Path] = []
    try:
        if args.report:
            write_text_atomic(args.report, json.dumps(report_dict, indent=1) + "\n")
            written.append(Path(args.report))
        if args.markdown:
            from spa.markdown import render

            sliced = sorted({s.initializer for s in plan.slices})
            text = render(report_dict, command=getattr(args, "command_line", None) or "spa prune",
                          plan_groups=[{**g.__dict__, "sliced": sliced} for g in plan.groups])
            write_text_atomic(args.markdown, text)
            written.append(Path(args.markdown))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


def _prune_bench(args: argparse.Namespace, original: Any, pruned: Any, out: Path | None) -> dict[str, Any]:
    """Time the original and the pruned model on the same inputs and settings (``--bench``)."""
    from spa.bench import bench_models, prune_bench, resolve_shapes
    from spa.runtime import random_inputs

    t0 = time.perf_counter()
    shapes, _ = resolve_shapes(original, where=args.model)
    feeds = random_inputs(original, seed=args.seed, shapes=shapes)  # the pruned model has the same inputs
    kw: dict[str, Any] = {"device": args.device, "threads": args.threads, "warmup": PRUNE_BENCH_WARMUP,
                          "runs": PRUNE_BENCH_RUNS, "inputs": feeds}
    before, after = bench_models([args.model, pruned], names=[args.model, str(out) if out else "pruned"], **kw)
    return {**prune_bench(before, after), "seconds": time.perf_counter() - t0}


def cmd_groups(args: argparse.Namespace) -> int:
    """List the coupled channel groups of MODEL: size, members, and why any is blocked."""
    from spa.api import analyze

    a = analyze(args.model, args.exclude)
    rows = []
    for g in a.groups:
        rows.append({
            "id": g.id, "name": g.describe(a.ctx), "units": g.n_units,
            "status": "blocked" if g.blocked else ("prunable" if g.prunable else "single"),
            "reasons": g.blocked, "members": [f"{t}:{ax}" for t, ax in g.members],
            "weights": [f"{t}:{ax}" for t, ax in g.params(a.ctx)],
        })
    if args.json:
        print(json.dumps({"model": args.model, "groups": rows}, indent=1))
        return EXIT_OK
    n_ok = sum(r["status"] == "prunable" for r in rows)
    _out(args, f"{args.model}: {len(rows)} groups, {n_ok} prunable, "
               f"{sum(r['status'] == 'blocked' for r in rows)} blocked")
    _out(args, f"{'id':>4} {'units':>6}  {'status':9} {'members':>7}  name / reason")
    for r in rows:
        line = f"{r['id']:>4} {r['units']:>6}  {r['status']:9} {len(r['members']):>7}  {r['name']}"
        _out(args, line)
        for reason in r["reasons"]:
            _out(args, f"{'':31}blocked: {reason}")
        if args.verbose:
            _out(args, f"{'':31}members: {', '.join(r['members'])}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Check that PRUNED equals ORIGINAL with the plan's removed channels masked to zero.

    Runs both in onnxruntime on the same seeded random inputs; exits 3 on a mismatch. Without
    --plan the outputs are compared directly.
    """
    from spa.api import verify_models
    from spa.plan import Plan

    _check_seed(args.seed)
    plan = Plan.load(args.plan) if args.plan else None
    v = verify_models(args.original, args.pruned, plan, seed=args.seed, atol=args.atol, rtol=args.rtol,
                      device=args.device)
    if args.json:
        print(json.dumps(v.to_dict(), indent=1))
    else:
        for o in v.outputs:
            _out(args, f"  {o.name}: max abs diff {o.max_abs:.3g} (output scale {o.scale:.3g}) {'ok' if o.ok else 'MISMATCH'}")
        _out(args, v.summary())
    if not v.passed:
        raise VerificationError(v.summary())
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure onnxruntime latency and throughput of one or more models, side by side.

    Each model gets warm-up runs, then timed runs (median, p90, min) that go round the models ten
    at a time, on the same seeded random inputs (or --inputs); params, MACs, size on disk and
    peak memory are shown too. The first model is the baseline: speedup is its median latency
    over each model's, ideal is its MACs over each model's.
    """
    from spa.bench import MEMORY_NOTE, bench_models, format_table, load_inputs, settings_line, to_json

    _check_seed(args.seed)
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
    _out(args, settings_line(results[0]))
    _out(args, format_table(results))
    _out(args, f"{MEMORY_NOTE}; MACs per inference at batch 1")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """Show versions, the onnxruntime build and providers, and the ops SPA has rules for."""
    import onnx

    from spa import __version__
    from spa.rules import registered_op_types
    from spa.runtime import installed_runtimes

    runtimes = installed_runtimes()
    _out(args, f"spa {__version__}, onnx {onnx.__version__}, python {sys.version.split()[0]}")
    _out(args, f"onnxruntime distributions: {', '.join(runtimes) or 'none'}")
    if len(runtimes) > 1:
        _out(args, "WARNING: both onnxruntime and onnxruntime-gpu are installed; they overwrite each other. "
                   "Fix: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    try:
        import onnxruntime as ort

        _out(args, f"providers: {', '.join(ort.get_available_providers())}")
    except ImportError as exc:
        _out(args, f"onnxruntime does not import: {exc}")
    _out(args, f"coupling rules for {len(registered_op_types())} ops: {' '.join(registered_op_types())}")
    return EXIT_OK


def _load_config(parser: argparse.ArgumentParser, argv: list[str]) -> Any:
    """The settings file for ``spa prune`` (``--config``, else looked up), applied as the
    prune parser's defaults; None for other commands, with ``--no-config`` or without a file."""
    from spa import config

    command = next((a for a in argv if not a.startswith("-")), None)
    subs = getattr(parser, "subcommands", {})
    if command not in subs or "-h" in argv or "--help" in argv:
        return None
    path, no_config = config.prescan(argv)
    if no_config:
        return None
    found = path if path is not None else config.find_config()
    if found is None:
        return None
    cfg = config.load(found, subs[command])
    config.apply(cfg, subs[command])
    return cfg


def _shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fail(exc: SpaError, quiet: int, start: float, cmd: str) -> int:
    message = "; ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()) or type(exc).__name__
    print(f"spa: {exc.prefix}: {message}", file=sys.stderr)
    if quiet < 2:
        print(f"FAILED | {time.perf_counter() - start:.2f} s | {cmd}", file=sys.stderr)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    start = time.perf_counter()
    cmd = "spa " + shlex.join(argv)
    try:
        cfg = _load_config(parser, argv)
    except SpaError as exc:
        return _fail(exc, 0, start, cmd)
    args = parser.parse_args(argv)
    if cfg is not None:
        from spa.config import fill_lists

        fill_lists(cfg, args)
        args.config_file = _shown_path(cfg.path)
    args.command_line = cmd
    _setup_logging(args)
    try:
        code = args.func(args)
    except SpaError as exc:
        return _fail(exc, args.quiet, start, cmd)
    except KeyboardInterrupt:
        print("spa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `spa groups model.onnx | head`: the reader left, nothing to report
        sys.stdout = None  # type: ignore[assignment]  # silence the flush at exit
        return EXIT_OK
    if args.quiet < 1:
        print(f"PASSED | {time.perf_counter() - start:.2f} s | {cmd}")
    return code
