"""Export the harder CNN patterns of :mod:`models.cnn_patterns` with both torch exporters.

Usage::

    python -m models.build_patterns [--out models/zoo/patterns] [--only NAME ...] [--defaults]

For each model ``NAME`` this writes ``NAME.ts.onnx`` (TorchScript exporter, ``dynamo=False``,
opset 17, ``do_constant_folding=False``) and ``NAME.dynamo.onnx`` (dynamo exporter,
``optimize=False``, ``external_data=False``, its default opset), both with a dynamic batch axis.
Export and checks are :mod:`models.build_zoo`'s: the full ``onnx.checker``, one
``BatchNormalization`` node per BatchNorm module, and every output within 1e-4 of torch in
onnxruntime. ``MANIFEST.json`` describes every file (exporter, opset, versions, outputs, op
types, max diff, size, sha256).

``--defaults`` exports the same models with each exporter's *default* settings (TorchScript with
constant folding, dynamo with its optimizer; :func:`models.build_zoo.export_to` with
``defaults=True``) into ``models/zoo/defaults/patterns``; the BatchNorm count is not checked there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import onnx

from models.build_zoo import ExportInfo, ZooError, export_to, verify
from models.cnn_patterns import INPUT_SHAPE, OUTPUTS, PATTERNS

log = logging.getLogger("models.build_patterns")
DEFAULT_OUT = Path(__file__).resolve().parent / "zoo" / "patterns"
DEFAULTS_OUT = Path(__file__).resolve().parent / "zoo" / "defaults" / "patterns"
MAX_BYTES = 300 * 1024
#: Exported at batch 2: from a batch-1 example the dynamo exporter specialises the batch of
#: ConvNeXt's head (LayerNorm2d of a 1x1 map, lowered to as_strided) and falls back to batch 1.
EXPORT_SHAPE = (2, *INPUT_SHAPE[1:])


def _strip_metadata(path: Path) -> None:
    """Drop the dynamo exporter's per-node stack traces (most of a small file, and they hold
    source line numbers, so any edit of ``cnn_patterns.py`` would change every file)."""
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
    onnx.save(proto, str(path))


def build_one(name: str, exporter: str, out: Path, defaults: bool = False) -> dict[str, object]:
    path = out / f"{name}.{exporter}.onnx"
    log.info("exporting %s", path.name)
    model = PATTERNS[name]()
    info: ExportInfo = export_to(model, path, exporter, EXPORT_SHAPE, output_names=OUTPUTS[name],  # type: ignore[arg-type]
                                 defaults=defaults)
    info.model = name
    if exporter == "dynamo":
        _strip_metadata(path)
    info = verify(path, info, model, output_names=OUTPUTS[name])
    if not info.dynamic_batch:
        raise ZooError(f"{path.name}: the batch axis is not dynamic")
    if info.file_size > MAX_BYTES:
        raise ZooError(f"{path.name}: {info.file_size} bytes, more than {MAX_BYTES}")
    entry = {k: v for k, v in asdict(info).items() if k != "file"}
    entry["outputs"] = list(OUTPUTS[name])
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: models/zoo/patterns, or models/zoo/defaults/patterns with --defaults)")
    ap.add_argument("--defaults", action="store_true",
                    help="export with each exporter's default settings (constant folding, optimizer)")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=list(PATTERNS), help="a subset of the models")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("torch", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    args.out = args.out or (DEFAULTS_OUT if args.defaults else DEFAULT_OUT)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "MANIFEST.json"
    files: dict[str, dict[str, object]] = {}
    if manifest_path.exists():  # keep the entries of models not rebuilt (--only)
        files = json.loads(manifest_path.read_text()).get("files", {})
    failures = []
    for name in args.only or list(PATTERNS):
        for exporter in ("ts", "dynamo"):
            try:
                files[f"{name}.{exporter}.onnx"] = build_one(name, exporter, args.out, args.defaults)
            except Exception as exc:  # noqa: BLE001 - collect, then fail loudly
                log.exception("FAILED %s.%s", name, exporter)
                failures.append(f"{name}.{exporter}: {exc}")
    files = {k: files[k] for k in sorted(files) if (args.out / k).exists()}
    generator = "python -m models.build_patterns" + (" --defaults" if args.defaults else "")
    manifest = {"generator": generator, "input": "input", "files": files}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    for fname, e in files.items():
        log.info("%-26s opset %-3s %7.1f KiB  max diff %.2e", fname, e["opset"], int(e["file_size"]) / 1024,  # type: ignore[call-overload]
                 e["max_abs_diff"])
    if failures:
        log.error("failed exports:\n  %s", "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
