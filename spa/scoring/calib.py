"""Calibration inputs: ``--calib DATA.npz`` (arrays keyed by input name) or a folder of
``<input name>.npy`` files. A model with one input also takes a file with one array of any name."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx

from spa.errors import InvalidArgumentError
from spa.model.inputs import NP_TYPES, SuppliedInputs, input_specs

#: Arrays of ``--calib`` data that hold targets, not inputs (for the gradient criteria).
TARGET_KEYS = ("labels", "targets")


def read_arrays(path: str | os.PathLike[str], flag: str, folders: bool = False) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file (or, with ``folders``, of a folder of ``.npy`` files)."""
    p = Path(path)
    kind = "a .npz file or a folder of .npy files" if folders else "a .npz file"
    try:
        if folders and p.is_dir():
            return {f.stem: np.load(f, allow_pickle=False) for f in sorted(p.glob("*.npy"))}
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InvalidArgumentError(f"{flag} {p}: no such file{' or folder' if folders else ''}") from None
    except (OSError, ValueError, EOFError, AttributeError, TypeError) as exc:
        raise InvalidArgumentError(f"{flag} {p}: not {kind} ({exc})") from None


def arrays_for_inputs(arrays: dict[str, np.ndarray], model: onnx.ModelProto, where: str) -> dict[str, np.ndarray]:
    """One array per model input, with its rank and static sizes (float arrays as float32).

    A model with one input also takes a single array of any name.
    """
    specs = input_specs(model)
    if len(specs) == 1 and len(arrays) == 1 and specs[0][0] not in arrays:
        arrays = {specs[0][0]: next(iter(arrays.values()))}
    out: dict[str, np.ndarray] = {}
    for name, dims, _ in specs:
        if name not in arrays:
            raise InvalidArgumentError(f"{where}: no array for model input '{name}' (found: {sorted(arrays)})")
        a = arrays[name]
        if a.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims[1:], a.shape[1:])):
            raise InvalidArgumentError(f"{where}: array '{name}' has shape {a.shape}, the model expects {dims}")
        out[name] = a.astype(np.float32) if a.dtype.kind == "f" and a.dtype != np.float32 else a
    return out


def load_calibration(path: str | os.PathLike[str], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Arrays for every model input, with matching rank, static sizes and equal batch length.

    A ``labels`` or ``targets`` array that is not a model input is left out (see :func:`load_targets`).
    """
    where = f"--calib {Path(path)}"
    inputs = {name for name, _, _ in input_specs(model)}
    arrays = {k: v for k, v in read_arrays(path, "--calib", folders=True).items() if k not in TARGET_KEYS or k in inputs}
    out = arrays_for_inputs(arrays, model, where)
    lengths = {len(a) for a in out.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise InvalidArgumentError(f"{where}: arrays must have the same non-zero length on axis 0")
    return out


def load_targets(path: str | os.PathLike[str], model: onnx.ModelProto) -> np.ndarray | None:
    """The ``labels`` (or ``targets``) array of ``--calib`` data, or None when it has neither.

    Used by the gradient criteria: class indices for ``--loss cross-entropy``, values shaped like
    the model's first output for ``--loss mse``.
    """
    inputs = {name for name, _, _ in input_specs(model)}
    arrays = read_arrays(path, "--calib", folders=True)
    found = [k for k in TARGET_KEYS if k in arrays and k not in inputs]
    if len(found) > 1:
        raise InvalidArgumentError(f"--calib {Path(path)}: holds both {' and '.join(found)}; keep one")
    return np.asarray(arrays[found[0]]) if found else None


def load_inputs(path: str | os.PathLike[str], model: onnx.ModelProto) -> SuppliedInputs:
    """``--inputs DATA.npz``: one array per model input with its dtype and rank, and its static sizes."""
    where = f"--inputs {path}"
    arrays = read_arrays(path, "--inputs")
    out: dict[str, np.ndarray] = {}
    for name, dims, et in input_specs(model):
        if name not in arrays:
            raise InvalidArgumentError(f"{where}: no array for model input '{name}' (found: {sorted(arrays) or 'none'})")
        a, want = arrays[name], NP_TYPES.get(et)
        if want is not None and a.dtype != np.dtype(want):
            raise InvalidArgumentError(f"{where}: array '{name}' has dtype {a.dtype}, the model expects {np.dtype(want)}")
        if a.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, a.shape)):
            raise InvalidArgumentError(f"{where}: array '{name}' has shape {a.shape}, the model expects {dims}")
        out[name] = a
    return SuppliedInputs(out, str(path))


#: Samples per onnxruntime run for data on a dynamic batch axis.
CHUNK = 32


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The static size of axis 0 shared by the inputs, or None when every axis 0 is dynamic."""
    sizes = {int(d[0]) for _, d, _ in input_specs(model) if d and isinstance(d[0], int) and d[0] > 0}
    if not sizes:
        return None
    if len(sizes) > 1:
        raise InvalidArgumentError(f"the model's inputs have different fixed batch sizes {sorted(sizes)}; "
                                   "cannot feed them data in batches")
    return sizes.pop()


def batches(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray], where: str) -> Iterator[dict[str, np.ndarray]]:
    """``arrays`` (all of equal length on axis 0) cut into the chunks one session run takes."""
    n = len(next(iter(arrays.values())))
    fixed = fixed_batch(model)
    step = fixed or CHUNK
    if fixed and n % fixed:
        raise InvalidArgumentError(f"{where}: {n} samples is not a multiple of the model's fixed batch size {fixed}")
    for start in range(0, n, step):
        yield {k: v[start:start + step] for k, v in arrays.items()}
