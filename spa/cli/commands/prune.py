"""``spa prune``: prune a model, check it, gate it, write it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from spa.check.gates import (
    LABELS_KEY,
    GateSpec,
    accuracy,
    evaluate,
    failure_message,
    format_gates,
    gates_to_dicts,
    measure_drift,
)
from spa.cli.commands.common import (
    DEVICE_HELP,
    DEVICES,
    EXIT_OK,
    PRUNE_CRITERION,
    STDOUT,
    add_common,
    add_criterion_args,
    add_inputs_arg,
    add_selection_args,
    add_shape_arg,
    calib_targets,
    check_outputs,
    check_seed,
    command_doc,
    count,
    emit,
    fraction,
    load_side_inputs,
    ratio,
    runtime_args,
    scoring_args,
    selection_args,
    target_args,
)
from spa.errors import GateError, VerificationError
from spa.model.inputs import supplied
from spa.model.io import default_output_path, load_model, save_model, write_text_atomic
from spa.model.runtime import random_inputs
from spa.pipeline.api import prune
from spa.planning.plan import Plan
from spa.planning.selection import check_ratio
from spa.report.bench import bench_models, format_prune_bench, prune_bench, resolve_shapes
from spa.report.markdown import render

PRUNE_BENCH_WARMUP, PRUNE_BENCH_RUNS = 3, 20  # `spa prune --bench`: quick, both models alike


def run(args: argparse.Namespace) -> int:
    """Prune MODEL and write a smaller, dense, checked ONNX model.

    Removes whole channels (filters, hidden units) group by group, rewrites the graph, checks the
    result with the full ONNX checker and onnxruntime, and prints a before/after table. Gates
    (--max-params, --max-macs, --min-speedup, --max-drift, --min-accuracy) fail the run with exit
    4 and write nothing. Settings also come from spa.toml or [tool.spa] in pyproject.toml.
    """

    if args.from_plan is None:
        check_ratio(args.ratio)
    check_seed(args.seed)
    spec = GateSpec(args.max_params, args.max_macs, args.min_speedup, args.max_drift, args.min_accuracy)
    spec.check(has_eval=bool(args.eval))
    if args.min_speedup is not None:
        args.bench = True
    out = None if args.dry_run else Path(args.output) if args.output else default_output_path(args.model)
    model = load_model(args.model, external_data=False)  # for its inputs; the weights are read by prune
    _check_outputs(args, out)
    plan_in = Plan.load(args.from_plan) if args.from_plan else None
    calib, eval_data = load_side_inputs(model, args.calib, args.eval)
    given = supplied()
    if calib is None and given is not None and len({len(a) for a in given.arrays.values()}) == 1:
        calib = given.arrays  # real inputs (--inputs) are also the statistics source
    labels = calib_targets(args.calib, model)
    del model  # prune loads the file and prunes it in place: this copy would double the weights in memory
    result = prune(args.model, args.ratio, args.criterion, selection=selection_args(args), target=target_args(args),
                   scoring=scoring_args(args, calib, labels), runtime=runtime_args(args), from_plan=plan_in,
                   verify_result=args.verify)
    result.report.model = args.model
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    nothing = result.report.groups_prunable == 0
    nothing_msg = (f"nothing to prune in {args.model}: every group is blocked or has one channel "
                   "(run `spa groups` to see why); no output written")
    by_norm = sum("--prune-norm-axes" in b.reason for b in result.report.blocked)
    if nothing and by_norm and not args.prune_norm_axes:
        nothing_msg += (f"; {by_norm} group{'s are' if by_norm > 1 else ' is'} blocked by a normalisation over "
                        "the channels: --prune-norm-axes prunes them (approximately; the drift is reported)")
    if nothing and not spec.any():
        emit(args, nothing_msg)
        if args.json or args.report == STDOUT:  # the document is still printed: nothing was pruned
            print(json.dumps(result.report.to_dict(), indent=1))
        return EXIT_OK
    if result.report.verification is not None and not result.report.verification.passed:
        emit(args, result.report.table())
        raise VerificationError(f"{result.report.verification.summary()}; nothing was written")
    bench = _prune_bench(args, result.model, out, result.report.sizes) if args.bench else None
    if bench is not None:
        result.report.seconds["bench"] = bench.pop("seconds")
    report_dict = result.report.to_dict()
    if bench is not None:
        report_dict["bench"] = bench
    gates = _run_gates(args, spec, args.model, result, bench, calib, eval_data, report_dict)
    report_dict["output"] = None
    report_dict["config"] = getattr(args, "config_file", None)
    report_dict["command"] = getattr(args, "command_line", None)
    failed = [g for g in gates if not g.passed]
    if nothing:
        emit(args, format_gates(gates))
        if failed:
            raise GateError(f"{failure_message(gates)}; nothing was written")
        emit(args, nothing_msg)
        return EXIT_OK
    if failed:
        _show_prune(args, result, bench, gates)
        wrote = _write_reports(args, report_dict, result.plan) if args.reports_on_fail else []
        tail = f"only {' and '.join(map(str, wrote))} written" if wrote else "nothing was written"
        raise GateError(f"{failure_message(gates)}; {tail}")
    _save_all(args, out, result, report_dict)
    _show_prune(args, result, bench, gates)
    emit(args, f"wrote {out}" if out is not None else "dry run: no model written")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("prune", help=command_doc(run).splitlines()[0], description=command_doc(run))
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("--ratio", type=ratio, default=0.4, help="fraction of each group's channels to remove, in [0, 1) (default 0.4)")
    p.add_argument("-o", "--output", help="output .onnx (default: MODEL.pruned.onnx beside the input)")
    add_criterion_args(p, default=PRUNE_CRITERION)
    p.add_argument("--plan", help="write the pruning plan (spa-plan/1 JSON) here ('-': standard output)")
    p.add_argument("--report", help="write the report as JSON here ('-': standard output)")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON on standard output (tables and status lines go to stderr)")
    p.add_argument("--from-plan", help="replay a saved plan instead of scoring")
    add_selection_args(p)
    add_shape_arg(p)
    p.add_argument("--target-macs", type=ratio, metavar="F",
                   help="find the ratio that leaves at most F (a fraction) of the original MACs; overrides --ratio")
    p.add_argument("--target-params", type=ratio, metavar="F",
                   help="find the ratio that leaves at most F (a fraction) of the original parameters")
    p.add_argument("--target-latency", type=ratio, metavar="MS",
                   help="find the smallest ratio whose pruned model measures at most MS milliseconds (median, "
                        "onnxruntime on --device with --threads); a bisection that times each candidate")
    p.add_argument("--target-speedup", type=ratio, metavar="X",
                   help="find the smallest ratio whose pruned model runs X times faster than the original (measured)")
    p.add_argument("--prune-heads", default="whole", choices=["whole", "dims", "none"],
                   help="attention granularity where a Reshape splits channels into heads: whole heads (default), "
                        "the same dims of every head, or none")
    p.add_argument("--prune-norm-axes", action="store_true",
                   help="also prune groups a LayerNorm normalises over (approximate: verify reports drift)")
    p.add_argument("--calib", metavar="DATA", help="calibration inputs for obspa: .npz keyed by input name, or a folder of <input>.npy; "
                   "plus 'labels' (or 'targets') for taylor, snip, grasp and crop")
    add_inputs_arg(p, also=", and for obspa's statistics unless --calib is given")
    p.add_argument("--stats", default="auto", choices=["auto", "moments", "synthetic", "data"],
                   help="obspa statistics: auto (default: data with --calib, else synthetic), synthetic (random inputs through the model), moments (no model runs), data (--calib)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random criterion and test inputs")
    p.add_argument("--verify", action="store_true", help="check masked equivalence before writing; exit 3 on mismatch")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="onnxruntime device for checks (and --bench): " + DEVICE_HELP)
    p.add_argument("--bench", action="store_true",
                   help=f"also time the original and the pruned model in onnxruntime ({PRUNE_BENCH_WARMUP} warm-up + "
                        f"{PRUNE_BENCH_RUNS} runs each, same inputs) and report measured vs ideal (MACs) speedup")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="intra-op threads for --bench and --target-latency/--target-speedup "
                        "(default 0: onnxruntime's choice, one per physical core)")
    _add_gates(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def _add_gates(p: argparse.ArgumentParser) -> None:
    """CI options of ``spa prune``: gates (exit 4, nothing written), the Markdown summary, config files."""
    g = p.add_argument_group("CI gates (a failed gate exits 4 and writes nothing)")
    g.add_argument("--max-params", type=count, metavar="N",
                   help="fail unless the pruned model has at most N parameters (suffixes k, M, G: 2.5M)")
    g.add_argument("--max-macs", type=count, metavar="N",
                   help="fail unless the pruned model has at most N MACs per inference (batch 1; 1.2G, 300M)")
    g.add_argument("--min-speedup", type=ratio, metavar="X",
                   help="fail unless the measured latency speedup (median before / after) is at least X; implies --bench")
    g.add_argument("--max-drift", type=ratio, metavar="E",
                   help="fail unless max over outputs of max|pruned - original| / max|original| is at most E, "
                        "on 8 seeded random samples (or the --calib data)")
    g.add_argument("--eval", metavar="DATA.npz",
                   help="labelled data: arrays keyed by input name plus integer 'labels'; reports top-1 accuracy "
                        "(argmax over the last axis of the first output) before and after")
    g.add_argument("--min-accuracy", type=fraction, metavar="A",
                   help="fail unless the pruned model's top-1 accuracy on --eval is at least A (0.9 or 90%%)")
    g.add_argument("--markdown", metavar="MD", help="also write a Markdown summary for a pull-request comment ('-': standard output)")
    g.add_argument("--reports-on-fail", action="store_true",
                   help="when a gate fails, still write --report and --markdown (never the model or the plan)")
    g.add_argument("--dry-run", action="store_true", help="prune, check and gate, but do not write the pruned model")
    c = g.add_mutually_exclusive_group()
    c.add_argument("--config", metavar="FILE",
                   help="read settings from this spa.toml or pyproject.toml ([tool.spa]) instead of looking them up")
    c.add_argument("--no-config", action="store_true", help="ignore spa.toml and [tool.spa] in pyproject.toml")


def _check_outputs(args: argparse.Namespace, out: Path | None) -> None:
    """Every output path is writable, none is an input, and no two are the same file."""
    inputs = [args.model] + [f for f in (args.from_plan, args.calib, args.inputs, args.eval,
                                         getattr(args, "config_file", None)) if f]
    outputs: dict[str, str | Path] = {"-o/--output": out} if out is not None else {}
    for flag, path in (("--plan", args.plan), ("--report", args.report), ("--markdown", args.markdown)):
        if path:
            outputs[flag] = path
    check_outputs(outputs, inputs)


def _save_all(args: argparse.Namespace, out: Path | None, result: Any, report_dict: dict[str, Any]) -> None:
    """Write the model, plan and reports; all or nothing (a failure removes what was written)."""

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
        if args.plan == STDOUT:
            print(result.plan.to_json())
        elif args.plan:
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
    """Measure what the gates need (drift, accuracy), record it in ``report_dict``, evaluate the gates.

    ``model`` is the original's path; it is loaded only when drift or accuracy is measured."""

    t0 = time.perf_counter()
    if spec.max_drift is not None or eval_data is not None:
        model = load_model(model)
    drift = None
    if spec.max_drift is not None:
        drift = measure_drift(model, result.model, seed=args.seed, device=args.device, calib=calib,
                              calib_name=args.calib or "--calib",
                              shapes=(result.report.sizes or {}).get("typical"))
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
        emit(args, f"settings from {args.config_file}")
    emit(args, result.report.table())
    if bench is not None:
        emit(args, format_prune_bench(bench))
    if gates:
        emit(args, format_gates(gates))


def _write_reports(args: argparse.Namespace, report_dict: dict[str, Any], plan: Any) -> list[Path]:
    """Write --report (JSON) and --markdown, each atomically; returns what was written."""

    written: list[Path] = []
    try:
        if args.json or args.report == STDOUT:
            print(json.dumps(report_dict, indent=1))
        if args.report and args.report != STDOUT:
            write_text_atomic(args.report, json.dumps(report_dict, indent=1) + "\n")
            written.append(Path(args.report))
        if args.markdown:
            sliced = sorted({s.initializer for s in plan.slices})
            text = render(report_dict, command=getattr(args, "command_line", None) or "spa prune",
                          plan_groups=[{**g.__dict__, "sliced": sliced} for g in plan.groups])
            if args.markdown == STDOUT:
                print(text, end="" if text.endswith("\n") else "\n")
            else:
                write_text_atomic(args.markdown, text)
                written.append(Path(args.markdown))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


def _prune_bench(args: argparse.Namespace, pruned: Any, out: Path | None,
                 result_sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time the original (``args.model``) and the pruned model on the same inputs and settings (``--bench``)."""

    t0 = time.perf_counter()
    typical = (result_sizes or {}).get("typical")  # the sizes MACs were counted at
    shapes, _ = resolve_shapes(pruned, typical, where=args.model)  # the pruned model has the original's inputs
    feeds = random_inputs(pruned, seed=args.seed, shapes=shapes)
    kw: dict[str, Any] = {"device": args.device, "threads": args.threads, "warmup": PRUNE_BENCH_WARMUP,
                          "runs": PRUNE_BENCH_RUNS, "inputs": feeds}
    before, after = bench_models([args.model, pruned], names=[args.model, str(out) if out else "pruned"], **kw)
    return {**prune_bench(before, after), "seconds": time.perf_counter() - t0}
