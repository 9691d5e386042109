"""Calibration inputs: ``--calib DATA.npz`` (arrays keyed by input name) or a folder of
``<input name>.npy`` files. A model with one input also takes a file with one array of any name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from spa.errors import InvalidArgumentError
from spa.runtime import input_specs


def load_calibration(path: str | os.PathLike[str], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Arrays for every model input, with matching rank, static sizes and equal batch length."""
    p = Path(path)
    try:
        if p.is_dir():
            arrays = {f.stem: np.load(f, allow_pickle=False) for f in sorted(p.glob("*.npy"))}
        else:
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InvalidArgumentError(f"--calib {p}: no such file or folder") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"--calib {p}: not a .npz file or a folder of .npy files ({exc})") from None
    specs = input_specs(model)
    if len(specs) == 1 and len(arrays) == 1 and specs[0][0] not in arrays:
        arrays = {specs[0][0]: next(iter(arrays.values()))}
    out: dict[str, np.ndarray] = {}
    for name, dims, _ in specs:
        if name not in arrays:
            raise InvalidArgumentError(f"--calib {p}: no array for model input '{name}' (found: {sorted(arrays)})")
        a = arrays[name]
        if a.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims[1:], a.shape[1:])):
            raise InvalidArgumentError(f"--calib {p}: array '{name}' has shape {a.shape}, the model expects {dims}")
        out[name] = a.astype(np.float32) if a.dtype.kind == "f" else a
    lengths = {len(a) for a in out.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise InvalidArgumentError(f"--calib {p}: arrays must have the same non-zero length on axis 0")
    return out
