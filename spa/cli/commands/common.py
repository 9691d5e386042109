"""Helpers every subcommand shares: exit codes, option types, common flags, output."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from spa.check.gates import load_eval, parse_count, parse_fraction
from spa.errors import InvalidArgumentError
from spa.model.inputs import derive_domains, is_runtime_error, synthesis_error, use_inputs
from spa.model.io import check_output_path, load_model
from spa.model.runtime import DEVICES
from spa.model.sizes import shapes_from_pairs as merge
from spa.planning.selection import check_round_to
from spa.records import Arrays, Runtime, Scoring, Selection, Target
from spa.report.bench import parse_shape
from spa.scoring.calib import load_calibration, load_inputs, load_targets

log = logging.getLogger("spa")

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_VERIFY, EXIT_GATE, EXIT_INTERNAL = 0, 1, 2, 3, 4, 5
__all__ = ["DEVICES"]  # re-exported for the subcommands' --device


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less output (-qq: errors only)")


DEVICE_HELP = ("onnxruntime device: cpu (default), cuda (fails when onnxruntime cannot use CUDA), or auto (CUDA "
               "where it works, else the CPU with a warning)")
DEFAULT_CRITERION = "l1"
#: ``spa prune``'s default: compensated OBS pruning, no data needed (docs/accuracy.md).
PRUNE_CRITERION = "obspa"


def add_criterion_args(p: argparse.ArgumentParser, default: str = DEFAULT_CRITERION) -> None:
    """``--criterion`` and ``--loss``, shared by the commands that score channels."""
    p.add_argument("--criterion", default=default,
                   help="importance criterion: l1, l2, bn-scale, random, obspa, fluctuation, activation; "
                        f"with labelled --calib data: taylor, snip, grasp, crop (default {default})")
    p.add_argument("--loss", default="cross-entropy", choices=["cross-entropy", "mse"],
                   help="loss on the first output for the gradient criteria (default cross-entropy: labels are "
                        "class indices)")


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """``--global``, ``--round-to`` and ``--exclude``: how many channels go and where, shared by the
    commands that prune."""
    p.add_argument("--global", dest="global_ranking", action="store_true", help="rank normalised scores across groups")
    p.add_argument("--round-to", type=round_to, default="auto", metavar="N|auto",
                   help="keep channel counts multiples of N; auto (default): multiples of 8 in groups of at least "
                        "16 channels, which onnxruntime's CPU kernels run faster (see docs/benchmarks.md)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="never prune groups touching a node or initializer matching PATTERN (glob; repeatable)")


def selection_args(args: argparse.Namespace) -> Selection:
    """The :class:`~spa.records.Selection` the command line asks for (``--global``, ``--round-to``,
    ``--exclude``, ``--prune-norm-axes``, ``--prune-heads`` where the command has it)."""
    return Selection(global_ranking=args.global_ranking, round_to=args.round_to, exclude=tuple(args.exclude),
                     prune_norm_axes=args.prune_norm_axes, prune_heads=getattr(args, "prune_heads", "whole"))


def target_args(args: argparse.Namespace) -> Target:
    """The :class:`~spa.records.Target` of ``--target-macs``, ``--target-params``, ``--target-latency``
    and ``--target-speedup`` (none set: prune at ``--ratio``)."""
    return Target(macs=args.target_macs, params=args.target_params, latency=args.target_latency,
                  speedup=args.target_speedup)


def scoring_args(args: argparse.Namespace, calib: Arrays | None, labels: np.ndarray | None) -> Scoring:
    """The :class:`~spa.records.Scoring` of ``--seed``, ``--stats`` and ``--loss``, with the data
    already loaded from ``--calib`` (``calib`` and its ``labels``)."""
    return Scoring(seed=args.seed, stats=args.stats, calib=calib, labels=labels, loss=args.loss,
                   calib_name=args.calib or "--calib")


def runtime_args(args: argparse.Namespace) -> Runtime:
    """The :class:`~spa.records.Runtime` of ``--device``, ``--threads`` and ``--shape``, with a progress
    bar on a terminal."""
    return Runtime(device=args.device, threads=args.threads, shapes=shapes_from_pairs(args.shape),
                   progress=progress_bar())


def calib_targets(path: str | None, model: Any) -> Any:
    """The 'labels' (or 'targets') of --calib data, for the gradient criteria; None without them."""
    if not path:
        return None

    return load_targets(path, model)


def ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def round_to(text: str) -> int | str:
    """``--round-to``: ``auto`` or an integer >= 1."""

    try:
        return check_round_to(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(text: str) -> int:
    try:
        return parse_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fraction(text: str) -> float:
    try:
        return parse_fraction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def progress_bar() -> Callable[[str, int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def draw(stage: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{stage:8} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        sys.stderr.flush()

    return draw


#: The path that means "standard output" for --report, --plan and --markdown.
STDOUT = "-"


def document_on_stdout(args: argparse.Namespace) -> bool:
    """True when stdout carries a machine-readable document (``--json``, or an output given as ``-``):
    then the human-readable lines (tables, "wrote ...", the PASSED status line) go to stderr."""
    return bool(getattr(args, "json", False)) or STDOUT in (getattr(args, f, None) for f in ("report", "plan", "markdown"))


def emit(args: argparse.Namespace, text: str) -> None:
    """Print a human-readable line (unless -q): to stdout, or to stderr when stdout carries a document."""
    if args.quiet < 1:
        print(text, file=sys.stderr if document_on_stdout(args) else sys.stdout)


def shape(text: str) -> tuple[str, list[int]]:
    try:
        return parse_shape(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


SHAPE_HELP = ("typical whole shape of input NAME (repeatable), e.g. x:1x3x48x320; MACs and latency are measured "
              "at it and the pruned model is also checked at a second size of every dynamic axis. Without it SPA "
              "derives sizes valid for the model (strides, pooling, resizing) and prints them")


def add_shape_arg(p: argparse.ArgumentParser, help_text: str = SHAPE_HELP) -> None:
    """``--shape NAME:D1xD2x...`` (repeatable), shared by prune, groups, verify and sweep."""
    p.add_argument("--shape", action="append", type=shape, default=[], metavar="NAME:D1xD2x...", help=help_text)


def shapes_from_pairs(pairs: list[tuple[str, list[int]]]) -> dict[str, list[int]] | None:
    """Repeated ``--shape`` values as one mapping (None when none was given)."""

    return merge(pairs)


def check_seed(seed: int) -> None:
    if seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {seed}")


def check_outputs(outputs: dict[str, str | Path], inputs: list[str]) -> None:
    """Every output path (keyed by its flag) is writable, none is an input, no two are one file."""

    seen: dict[Path, str] = {}
    to_stdout = [flag for flag, path in outputs.items() if str(path) == STDOUT]
    if len(to_stdout) > 1:
        raise InvalidArgumentError(f"{' and '.join(to_stdout)} both write to standard output ('-'); give one a file")
    for flag, path in outputs.items():
        if str(path) == STDOUT:
            continue
        check_output_path(path, *inputs)
        key = Path(path).resolve()
        if key in seen:
            raise InvalidArgumentError(f"{path}: {flag} and {seen[key]} name the same file; give them different paths")
        seen[key] = flag


def load_side_inputs(model: onnx.ModelProto, calib: str | None, eval_path: str | None
                     ) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """Calibration (--calib) and evaluation (--eval) data, checked against the model's inputs."""
    calib_data = load_calibration(calib, model) if calib else None
    eval_data = load_eval(eval_path, model) if eval_path else None
    return calib_data, eval_data


def command_doc(run: Callable[..., int]) -> str:
    """The docstring of a subcommand's ``run``: its first line is the help, the whole its description."""
    if not run.__doc__:
        raise TypeError(f"{run.__module__}.run has no docstring")
    return run.__doc__


def add_inputs_arg(p: argparse.ArgumentParser, also: str = "") -> None:
    """``--inputs DATA.npz``: real input values instead of synthetic ones (:func:`inputs_scope`)."""
    p.add_argument("--inputs", metavar="DATA.npz",
                   help="arrays keyed by input name used instead of synthetic inputs for shape probes, checks and "
                        f"verification{also} (for models whose valid inputs SPA cannot derive)")


def _model_path(args: argparse.Namespace) -> str | None:
    return getattr(args, "model", None) or getattr(args, "original", None)


@contextlib.contextmanager
def inputs_scope(args: argparse.Namespace) -> Iterator[None]:
    """Run a command with ``--inputs`` in effect (if given); an onnxruntime failure on synthetic
    inputs that SPA could not derive becomes a one-line error naming them."""
    given = None
    path = _model_path(args)
    if getattr(args, "inputs", None) and path:
        given = load_inputs(args.inputs, load_model(path, external_data=False))
    try:
        with use_inputs(given):
            yield
    except Exception as exc:
        if given is not None or not is_runtime_error(exc) or not path:
            raise
        model = load_model(path, external_data=False)
        if not derive_domains(model).underived():
            raise  # every input was derived: onnxruntime failing is a bug to report, with its traceback
        raise synthesis_error(model, exc) from None
