"""Export the ``torch.nn`` transformers of :mod:`models.transformers_nn` with both torch exporters.

Usage::

    python -m models.build_transformers [--out models/zoo/transformers] [--only NAME ...] [--defaults]

Writes ``NAME.ts.onnx`` (TorchScript exporter, opset 17, ``do_constant_folding=False``) and
``NAME.dynamo.onnx`` (dynamo exporter, ``optimize=False``, opset 20 unless it fails), with a
dynamic batch axis and, for token models, a dynamic sequence axis; every file is checked with
``onnx.checker`` (full) and against torch in onnxruntime, and described in ``MANIFEST.json``.
The exports are :mod:`models.build_zoo`'s (``_export_ts``, ``_export_dynamo``).

``--defaults`` exports with each exporter's *default* settings instead (TorchScript with constant
folding, dynamo with its optimizer) into ``models/zoo/defaults/transformers``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript
import torch

from models.build_zoo import _export_dynamo, _export_ts
from models.transformers_nn import SEQ, TOKEN_MODELS, TRANSFORMERS, example_input

log = logging.getLogger("models.build_transformers")
DEFAULT_OUT = Path(__file__).resolve().parent / "zoo" / "transformers"
DEFAULTS_OUT = Path(__file__).resolve().parent / "zoo" / "defaults" / "transformers"
TS_OPSET, ATOL = 17, 1e-4


def _names(name: str) -> tuple[str, str]:
    return ("input_ids" if name in TOKEN_MODELS else "input"), "logits"


def export(name: str, path: Path, exporter: str, defaults: bool = False) -> None:
    model = TRANSFORMERS[name]().eval()
    x = example_input(name)
    inp, out = _names(name)
    token = name in TOKEN_MODELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "ts":
            _export_ts(model, x, path, TS_OPSET, True, (out,), defaults, inp,
                       {0: "batch", 1: "seq"} if token else {0: "batch"})
        else:
            dims: dict[int, object] = {0: torch.export.Dim("batch", min=1, max=64)}
            if token:
                dims[1] = torch.export.Dim("seq", min=2, max=SEQ)
            if not _export_dynamo(model, x, path, None, True, (out,), defaults, inp, dims):
                raise RuntimeError(f"{path.name}: the dynamo exporter made the batch axis static")


def check(name: str, path: Path) -> dict[str, object]:
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    model = TRANSFORMERS[name]()
    inp, _ = _names(name)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = []
    for batch, seq in ((1, SEQ), (3, SEQ - 4 if name in TOKEN_MODELS else SEQ)):
        x = example_input(name, batch)[:, :seq] if name in TOKEN_MODELS else example_input(name, batch)
        (got,) = sess.run(None, {inp: x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        diffs.append(float(np.abs(got - want).max()))
    if max(diffs) >= ATOL:
        raise RuntimeError(f"{path.name}: max abs diff {max(diffs):.3g} vs torch")
    data = path.read_bytes()
    opset = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    return {"file": path.name, "model": name, "exporter": "torchscript" if ".ts." in path.name else "dynamo",
            "opset": opset, "torch_version": torch.__version__, "onnx_version": onnx.__version__,
            "onnxscript_version": onnxscript.__version__, "input": inp,
            "op_types": sorted({n.op_type for n in proto.graph.node}), "max_abs_diff": max(diffs),
            "file_size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: models/zoo/transformers, or models/zoo/defaults/transformers "
                         "with --defaults)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--defaults", action="store_true",
                    help="export with each exporter's default settings (constant folding, optimizer)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("torch", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out_dir: Path = args.out or (DEFAULTS_OUT if args.defaults else DEFAULT_OUT)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    failures = []
    for name in args.only or list(TRANSFORMERS):
        for exporter in ("ts", "dynamo"):
            path = out_dir / f"{name}.{exporter}.onnx"
            try:
                export(name, path, exporter, args.defaults)
                manifest[path.name] = check(name, path)
            except Exception as exc:  # noqa: BLE001 - collect, then fail loudly
                log.exception("FAILED %s", path.name)
                failures.append(f"{path.name}: {exc}")
                continue
            if args.defaults:
                manifest[path.name]["settings"] = "exporter defaults"
            log.info("%s: ok (max diff %.2g)", path.name, manifest[path.name]["max_abs_diff"])
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    if failures:
        log.error("failed exports:\n  %s", "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
