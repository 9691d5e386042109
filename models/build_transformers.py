"""Export the ``torch.nn`` transformers of :mod:`models.transformers_nn` with both torch exporters.

Usage::

    python -m models.build_transformers [--out models/zoo/transformers] [--only NAME ...]

Writes ``NAME.ts.onnx`` (TorchScript exporter, opset 17, ``do_constant_folding=False``) and
``NAME.dynamo.onnx`` (dynamo exporter, ``optimize=False``, opset 20 unless it fails), with a
dynamic batch axis and, for token models, a dynamic sequence axis; every file is checked with
``onnx.checker`` (full) and against torch in onnxruntime, and described in ``MANIFEST.json``.
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

from models.transformers_nn import SEQ, TOKEN_MODELS, TRANSFORMERS, example_input

log = logging.getLogger("models.build_transformers")
DEFAULT_OUT = Path(__file__).resolve().parent / "zoo" / "transformers"
TS_OPSET, ATOL = 17, 1e-4


def _names(name: str) -> tuple[str, str]:
    return ("input_ids" if name in TOKEN_MODELS else "input"), "logits"


def export(name: str, path: Path, exporter: str) -> None:
    model = TRANSFORMERS[name]()
    x = example_input(name)
    inp, out = _names(name)
    token = name in TOKEN_MODELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "ts":
            axes = {0: "batch", 1: "seq"} if token else {0: "batch"}
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=TS_OPSET,
                              do_constant_folding=False, input_names=[inp], output_names=[out],
                              dynamic_axes={inp: axes, out: dict(axes)})
        else:
            dims = {0: torch.export.Dim("batch", min=1, max=64)}
            if token:
                dims[1] = torch.export.Dim("seq", min=2, max=SEQ)
            program = torch.onnx.export(model, (x,), dynamo=True, optimize=False, external_data=False,
                                        input_names=[inp], output_names=[out], dynamic_shapes=(dims,))
            program.save(str(path), external_data=False)


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
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in args.only or list(TRANSFORMERS):
        for exporter in ("ts", "dynamo"):
            path = args.out / f"{name}.{exporter}.onnx"
            export(name, path, exporter)
            manifest[path.name] = check(name, path)
            log.info("%s: ok (max diff %.2g)", path.name, manifest[path.name]["max_abs_diff"])
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
