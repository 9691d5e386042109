"""``spa info``: versions, runtimes and rules."""

from __future__ import annotations

import argparse
import sys

from spa.analysis.rules import registered_op_types
from spa.cli.commands.common import EXIT_OK, add_common, command_doc, emit
from spa.model.runtime import installed_runtimes
from spa.version import __version__


def run(args: argparse.Namespace) -> int:
    """Show versions, the onnxruntime build and providers, and the ops SPA has rules for."""
    import onnx


    runtimes = installed_runtimes()
    emit(args, f"spa {__version__}, onnx {onnx.__version__}, python {sys.version.split()[0]}")
    emit(args, f"onnxruntime distributions: {', '.join(runtimes) or 'none'}")
    if len(runtimes) > 1:
        emit(args, "WARNING: both onnxruntime and onnxruntime-gpu are installed; they overwrite each other. "
                   "Fix: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    try:
        import onnxruntime as ort

        emit(args, f"providers: {', '.join(ort.get_available_providers())}")
    except ImportError as exc:
        emit(args, f"onnxruntime does not import: {exc}")
    emit(args, f"coupling rules for {len(registered_op_types())} ops: {' '.join(registered_op_types())}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help=command_doc(run).splitlines()[0], description=command_doc(run))
    add_common(p)
    p.set_defaults(func=run)
    return p
