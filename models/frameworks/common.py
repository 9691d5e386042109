"""Shared by the framework build scripts: check an exported file and record it in the manifest.

Needs only ``numpy``, ``onnx`` and ``onnxruntime``, which every framework venv has. A file is
accepted when ``onnx.checker.check_model(full_check=True)`` passes, onnxruntime (CPU) runs it on
the given inputs, and its outputs match the framework's own outputs within ``atol``; otherwise
:class:`BuildError` is raised and nothing is recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

OUT_DIR = Path(__file__).resolve().parent.parent / "zoo" / "frameworks"
MANIFEST = OUT_DIR / "MANIFEST.json"
MAX_BYTES = 1 << 20

log = logging.getLogger("models.frameworks")


def pin_hash_seed(module: str) -> None:
    """Re-run ``python -m module`` with ``PYTHONHASHSEED=0`` unless it is already set so.

    Exporters that iterate over sets of names (tf2onnx's duplicate-node merging, for one) pick
    different survivors under different string hashes, so the bytes of the file would change
    from run to run.
    """
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]])


class BuildError(RuntimeError):
    """An exported file failed the checker, onnxruntime, or the comparison with its framework."""


def save_checked(
    model: onnx.ModelProto,
    name: str,
    feeds: Mapping[str, np.ndarray],
    expected: Sequence[np.ndarray],
    info: Mapping[str, Any],
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Check ``model``, write it as ``OUT_DIR/name`` and merge its entry into the manifest."""
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if len(data) > MAX_BYTES:
        raise BuildError(f"{name}: {len(data)} bytes, over the {MAX_BYTES}-byte budget for committed files")
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, dict(feeds))
    if len(got) != len(expected):
        raise BuildError(f"{name}: onnxruntime gave {len(got)} outputs, the framework {len(expected)}")
    diff = 0.0
    for g, e in zip(got, expected):
        e = np.asarray(e)
        if g.shape != e.shape:
            raise BuildError(f"{name}: output shape {g.shape} in onnxruntime, {e.shape} in the framework")
        diff = max(diff, float(np.max(np.abs(g.astype(np.float64) - e.astype(np.float64)))))
    if diff > atol:
        raise BuildError(f"{name}: max abs diff {diff:.3g} vs the framework exceeds {atol}")
    _atomic_write(OUT_DIR / name, data)
    entry = {
        **info,
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "inputs": {i.name: _shape(i) for i in model.graph.input},
        "outputs": {o.name: _shape(o) for o in model.graph.output},
        "op_types": sorted({n.op_type for n in model.graph.node}),
        "num_nodes": len(model.graph.node),
        "max_abs_diff": diff,
        "file_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    _merge_manifest(name, entry)
    log.info("%s: %d bytes, %d nodes, max abs diff %.3g", name, len(data), len(model.graph.node), diff)
    return entry


def _shape(v: onnx.ValueInfoProto) -> list[int | str]:
    dims = v.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _merge_manifest(name: str, entry: Mapping[str, Any]) -> None:
    doc: dict[str, Any] = {"generator": "models/frameworks/build_*.py", "files": {}}
    if MANIFEST.exists():
        doc = json.loads(MANIFEST.read_text())
    doc["files"][name] = dict(entry)
    doc["files"] = dict(sorted(doc["files"].items()))
    _atomic_write(MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
