"""Export every ZOO model to ONNX with both torch exporters and verify the files.

Usage::

    python -m models.build_zoo [--out models/zoo] [--only NAME ...]

For each model ``NAME`` this writes ``NAME.ts.onnx`` (TorchScript exporter,
opset 17) and ``NAME.dynamo.onnx`` (dynamo exporter, unoptimised), plus
``resnet_basic.ts11.onnx`` (TorchScript exporter, opset 11).  Every file is
checked with ``onnx.checker`` (full_check), must keep BatchNorm as
``BatchNormalization`` nodes, and must match torch in onnxruntime to 1e-4.
A ``MANIFEST.json`` describing every file is written next to them.

``--defaults`` exports every model the way most users do, with each exporter's
*default* settings, into ``models/zoo/defaults``: TorchScript with constant
folding (BatchNorm folded into the convolutions, equal folded biases shared as
``Identity`` views), dynamo with its ONNX optimizer on.  Only the BatchNorm
count check is skipped for those files.

``export_to`` is reusable, e.g. by benchmarks exporting ``resnet50_like``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript
import torch
from torch import nn

from models.zoo import BENCHMARKS, INPUT_SHAPE, ZOO

log = logging.getLogger("models.build_zoo")

Exporter = Literal["ts", "dynamo"]
EXPORTER_LABEL: dict[str, str] = {"ts": "torchscript", "dynamo": "dynamo"}
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TS_OPSET = 17
ATOL = 1e-4
DEFAULT_OUT = Path(__file__).resolve().parent / "zoo"
DEFAULTS_OUT = DEFAULT_OUT / "defaults"


class ZooError(RuntimeError):
    """Raised when an export or a verification fails."""


@dataclass
class ExportInfo:
    file: str
    model: str
    exporter: str
    opset: int
    torch_version: str
    onnx_version: str
    onnxscript_version: str
    input_shape: list[int]
    dynamic_batch: bool
    settings: str = "spa"
    file_size: int = 0
    op_types: list[str] = field(default_factory=list)
    local_functions: list[str] = field(default_factory=list)
    num_batchnorm: int = 0
    max_abs_diff: float = 0.0
    sha256: str = ""


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------


def _resolve(
    name_or_module: str | nn.Module, input_shape: tuple[int, ...] | None
) -> tuple[str, nn.Module, tuple[int, ...]]:
    if isinstance(name_or_module, nn.Module):
        return (
            type(name_or_module).__name__,
            name_or_module.eval(),
            tuple(input_shape or INPUT_SHAPE),
        )
    if name_or_module in ZOO:
        return name_or_module, ZOO[name_or_module](), tuple(input_shape or INPUT_SHAPE)
    if name_or_module in BENCHMARKS:
        builder, shape = BENCHMARKS[name_or_module]
        return name_or_module, builder(), tuple(input_shape or shape)
    raise KeyError(
        f"unknown model {name_or_module!r}; known: {sorted(ZOO) + sorted(BENCHMARKS)}"
    )


def _export_ts(
    model: nn.Module,
    x: torch.Tensor,
    path: Path,
    opset: int,
    dynamic_batch: bool,
    output_names: Sequence[str] = (OUTPUT_NAME,),
    defaults: bool = False,
    input_name: str = INPUT_NAME,
    axes: dict[int, str] | None = None,
) -> None:
    """Export with the TorchScript exporter (``defaults``: constant folding on, as by default).
    ``axes`` names the dynamic axes of the input and every output (default: ``{0: "batch"}``)."""
    dynamic_axes = (
        {name: dict(axes or {0: "batch"}) for name in (input_name, *output_names)}
        if dynamic_batch
        else None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            # do_constant_folding=False is what keeps BatchNorm as a node: with
            # folding on (the exporter's default), the eval-mode peephole pass
            # fuses Conv+BN (checked with torch 2.13).  verify() asserts the BN
            # node count unless the file is a ``defaults`` export.
            do_constant_folding=defaults,
            training=torch.onnx.TrainingMode.EVAL,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
        )


def _export_dynamo(
    model: nn.Module,
    x: torch.Tensor,
    path: Path,
    opset: int | None,
    dynamic_batch: bool,
    output_names: Sequence[str] = (OUTPUT_NAME,),
    defaults: bool = False,
    input_name: str = INPUT_NAME,
    dims: dict[int, object] | None = None,
) -> bool:
    """Export with the dynamo exporter (``defaults``: its ONNX optimizer on, as by default);
    returns whether the batch dim is dynamic. ``dims`` are the input's dynamic dims
    (``torch.export.Dim``; default: a batch of 1 to 4096)."""

    def run(dynamic: bool) -> None:
        dynamic_shapes = (
            (dims or {0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                optimize=defaults,
                verbose=False,
                external_data=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_shapes=dynamic_shapes,
            )
        assert program is not None
        program.save(str(path), external_data=False)

    if dynamic_batch:
        try:
            run(True)
            return True
        except Exception as exc:  # noqa: BLE001 - fall back to a static batch
            log.warning(
                "dynamo export with dynamic batch failed for %s (%s); using static batch",
                path.name,
                exc,
            )
    run(False)
    return False


def export_to(
    name_or_module: str | nn.Module,
    path: str | Path,
    exporter: Exporter = "ts",
    input_shape: tuple[int, ...] | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
    output_names: Sequence[str] = (OUTPUT_NAME,),
    defaults: bool = False,
) -> ExportInfo:
    """Export a ZOO/benchmark model (by name) or any module to ``path``.

    ``exporter`` is ``"ts"`` (TorchScript, default opset 17) or ``"dynamo"``
    (unoptimised, opset = exporter default unless given).  BatchNorm is kept
    as BatchNormalization nodes, unless ``defaults``: then each exporter runs
    with its default settings (constant folding / optimizer on).  Returns the
    (unverified) export info; call ``verify`` for checker/onnxruntime checks.
    """
    name, model, shape = _resolve(name_or_module, input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(*shape)
    if exporter == "ts":
        _export_ts(model, x, path, opset or TS_OPSET, dynamic_batch, output_names, defaults)
        dynamic = dynamic_batch
    elif exporter == "dynamo":
        dynamic = _export_dynamo(model, x, path, opset, dynamic_batch, output_names, defaults)
    else:
        raise ValueError(f"exporter must be 'ts' or 'dynamo', not {exporter!r}")
    proto = onnx.load(str(path))
    return ExportInfo(
        file=path.name,
        model=name,
        exporter=EXPORTER_LABEL[exporter],
        opset=_default_opset(proto),
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        onnxscript_version=onnxscript.__version__,
        input_shape=list(shape),
        dynamic_batch=dynamic,
        settings="exporter defaults" if defaults else "spa",
    )


# ---------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------


def _default_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ZooError("model has no default-domain opset import")


def _all_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    nodes = list(proto.graph.node)
    for fn in proto.functions:
        nodes.extend(fn.node)
    return nodes


def op_types(proto: onnx.ModelProto) -> list[str]:
    """Sorted op types in the main graph and any local functions (``domain::Op`` outside ai.onnx)."""
    local = {(f.domain, f.name) for f in proto.functions}
    ops = set()
    for n in _all_nodes(proto):
        if (n.domain, n.op_type) in local:
            continue
        ops.add(
            n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        )
    return sorted(ops)


def _run_counting_batchnorms(
    model: nn.Module, x: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], int]:
    """The model's outputs on ``x`` and how many BatchNorm calls made them (a shared module counts each call)."""
    calls = [0]

    def count(*_: object) -> None:
        calls[0] += 1

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return (tuple(out) if isinstance(out, tuple | list) else (out,)), calls[0]


def verify(
    path: str | Path,
    info: ExportInfo,
    model: nn.Module | None = None,
    output_names: Sequence[str] = (OUTPUT_NAME,),
) -> ExportInfo:
    """Checker (full), BatchNorm presence, and onnxruntime vs torch comparison of every output."""
    path = Path(path)
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ZooError(f"{path.name}: onnx.checker failed: {exc}") from exc

    if model is None:
        _, model, _ = _resolve(info.model, tuple(info.input_shape))
    shape = list(info.input_shape)
    if info.dynamic_batch:
        shape[0] = 2
    rng = np.random.default_rng(1234)
    x = rng.standard_normal(shape).astype(np.float32)
    wants, n_bn_calls = _run_counting_batchnorms(model, torch.from_numpy(x))
    n_bn_nodes = sum(n.op_type == "BatchNormalization" for n in _all_nodes(proto))
    if n_bn_nodes != n_bn_calls and info.settings == "spa":
        raise ZooError(
            f"{path.name}: {n_bn_nodes} BatchNormalization nodes but {n_bn_calls} BatchNorm calls (folded?)"
        )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if [i.name for i in sess.get_inputs()] != [INPUT_NAME] or [
        o.name for o in sess.get_outputs()
    ] != list(output_names):
        raise ZooError(
            f"{path.name}: unexpected io names {[i.name for i in sess.get_inputs()]} -> {[o.name for o in sess.get_outputs()]}"
        )
    gots = sess.run(list(output_names), {INPUT_NAME: x})
    diff = 0.0
    for got, want in zip(gots, (w.numpy() for w in wants), strict=True):
        if got.shape != want.shape:
            raise ZooError(f"{path.name}: output shape {got.shape} != torch {want.shape}")
        diff = max(diff, float(np.max(np.abs(got - want))))
    if not diff < ATOL:
        raise ZooError(f"{path.name}: max abs diff {diff:.3e} >= {ATOL}")

    data = path.read_bytes()
    info.file_size = len(data)
    info.sha256 = hashlib.sha256(data).hexdigest()
    info.op_types = op_types(proto)
    info.local_functions = sorted(f"{f.domain}::{f.name}" for f in proto.functions)
    info.num_batchnorm = n_bn_nodes
    info.max_abs_diff = diff
    return info


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def _jobs(names: list[str], defaults: bool = False) -> list[tuple[str, str, Exporter, int | None]]:
    """(model, file name, exporter, opset) for every file to build."""
    jobs: list[tuple[str, str, Exporter, int | None]] = []
    for name in names:
        jobs.append((name, f"{name}.ts.onnx", "ts", TS_OPSET))
        jobs.append((name, f"{name}.dynamo.onnx", "dynamo", None))
        if name == "resnet_basic" and not defaults:
            jobs.append((name, f"{name}.ts11.onnx", "ts", 11))
    return jobs


def build(out: Path, only: list[str] | None = None, defaults: bool = False) -> list[ExportInfo]:
    names = only or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise ZooError(f"unknown ZOO models: {unknown}; known: {list(ZOO)}")
    out.mkdir(parents=True, exist_ok=True)
    infos: list[ExportInfo] = []
    failures: list[str] = []
    for name, fname, exporter, opset in _jobs(names, defaults):
        path = out / fname
        log.info("exporting %s", fname)
        try:
            info = export_to(name, path, exporter, opset=opset, defaults=defaults)
            infos.append(verify(path, info))
        except Exception as exc:  # collect, then fail loudly
            log.exception("FAILED %s", fname)
            failures.append(f"{fname}: {exc}")
    _write_manifest(out, infos, defaults)
    _log_summary(infos)
    if failures:
        raise ZooError("failed exports:\n  " + "\n  ".join(failures))
    return infos


def _write_manifest(out: Path, infos: list[ExportInfo], defaults: bool = False) -> None:
    manifest_path = out / "MANIFEST.json"
    entries: dict[str, dict] = {}
    if manifest_path.exists():  # keep entries of models not rebuilt this time (--only)
        entries = json.loads(manifest_path.read_text()).get("files", {})
    for info in infos:
        entries[info.file] = {k: v for k, v in asdict(info).items() if k != "file"}
    entries = {k: entries[k] for k in sorted(entries) if (out / k).exists()}
    manifest = {
        "generator": "python -m models.build_zoo" + (" --defaults" if defaults else ""),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "files": entries,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    log.info("wrote %s (%d files)", manifest_path, len(entries))


def _log_summary(infos: list[ExportInfo]) -> None:
    header = f"{'file':36} {'opset':>5} {'dyn':>4} {'BN':>4} {'KiB':>7} {'maxdiff':>9}"
    lines = [header, "-" * len(header)]
    for i in infos:
        lines.append(
            f"{i.file:36} {i.opset:>5} {'yes' if i.dynamic_batch else 'no':>4} {i.num_batchnorm:>4} "
            f"{i.file_size / 1024:>7.1f} {i.max_abs_diff:>9.2e}"
        )
    total = sum(i.file_size for i in infos)
    lines.append(f"total {len(infos)} files, {total / 1024:.1f} KiB")
    log.info("summary\n%s", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: models/zoo, or models/zoo/defaults with --defaults)",
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="export with each exporter's default settings (constant folding, optimizer)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help=f"subset of {list(ZOO)}"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # the dynamo exporter is chatty on INFO
    for noisy in ("torch", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # "torchvision is not installed. Skipping torchvision::nms" etc.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(
        logging.ERROR
    )
    try:
        build(args.out or (DEFAULTS_OUT if args.defaults else DEFAULT_OUT), args.only, args.defaults)
    except ZooError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
