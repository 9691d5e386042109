"""Loading and saving ONNX models: validation on the way in, atomic writes on the way out."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from spa.errors import ModelLoadError, OutputError, UnsupportedModelError

log = logging.getLogger(__name__)

MIN_OPSET = 11
# Protobuf cannot serialise a message over 2 GiB; above this we always use external data.
_EXTERNAL_DATA_THRESHOLD = 1 << 30


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports (0 when absent)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read and validate an ONNX file, external data included.

    Refuses (with :class:`ModelLoadError`) a missing, empty, truncated or non-ONNX file, and
    (with :class:`UnsupportedModelError`) a default-domain opset older than 11.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected an .onnx file")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: file is empty, expected an ONNX model")
    try:
        model = onnx.load(str(p), load_external_data=True)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ModelLoadError(f"{p}: not a valid ONNX file (protobuf decode failed: {exc})") from None
    except onnx.checker.ValidationError as exc:  # raised for missing/invalid external data
        raise ModelLoadError(f"{p}: external data cannot be read: {str(exc).strip().splitlines()[0]}") from None
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{p}: external data file missing: {exc.filename or exc}") from None
    except OSError as exc:
        raise ModelLoadError(f"{p}: cannot read: {exc}") from None
    check_is_model(model, str(p))
    return model


def check_is_model(model: onnx.ModelProto, where: str = "model") -> None:
    """Reject protobufs that parsed but are not ONNX models, and opsets we do not support."""
    if model.ir_version == 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelLoadError(f"{where}: not an ONNX model (no IR version or empty graph)")
    from spa.shapes import weightless

    try:
        # The structural check needs types and shapes, not weight bytes: check a weightless copy.
        onnx.checker.check_model(weightless(model), full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{where}: model fails onnx.checker: {first}") from None
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"{where}: opset {opset} is older than {MIN_OPSET}; upgrade it first with "
            "onnx.version_converter.convert_version(model, 13)"
        )


def default_output_path(input_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.pruned.onnx`` beside the input."""
    p = Path(input_path)
    return p.with_name(p.stem + ".pruned" + (p.suffix or ".onnx"))


def check_output_path(out: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> Path:
    """Refuse to overwrite an input and to write into a folder that is missing or unwritable."""
    o = Path(out)
    for i in inputs:
        ip = Path(i)
        if ip.exists() and (o.resolve() == ip.resolve()):
            raise OutputError(f"{o}: output path equals the input; choose another with -o")
    parent = o.parent if str(o.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{o}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{o}: output folder {parent} is not writable")
    if o.is_dir():
        raise OutputError(f"{o}: is a directory; give a file name with -o")
    return o


def save_model(model: onnx.ModelProto, out: str | os.PathLike[str]) -> Path:
    """Write ``model`` atomically: to a temporary folder beside ``out``, then rename.

    Models over 1 GiB are written with their tensors in ``<out name>.data`` beside the model.
    A failure leaves no partial file behind.
    """
    o = Path(out)
    parent = o.parent if str(o.parent) else Path(".")
    from spa.metrics import serialized_size

    big = serialized_size(model) > _EXTERNAL_DATA_THRESHOLD
    tmpdir = ""
    try:
        tmpdir = tempfile.mkdtemp(prefix=".spa-", dir=parent)
        tmp_model = Path(tmpdir) / o.name
        data_name = o.name + ".data"
        if big:
            # save_model moves tensors out of the message it is given: save a copy.
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.save_model(
                copy,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            os.replace(Path(tmpdir) / data_name, parent / data_name)
        else:
            tmp_model.write_bytes(model.SerializeToString())
        os.replace(tmp_model, o)
    except OSError as exc:
        raise OutputError(f"{o}: cannot write: {exc}") from None
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    log.debug("wrote %s%s", o, " (+ external data)" if big else "")
    return o


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    return write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    o = Path(path)
    parent = o.parent if str(o.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{o}: folder {parent} does not exist")
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".spa-", dir=parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, o)
    except OSError as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"{o}: cannot write: {exc}") from None
    return o


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
