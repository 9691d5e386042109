"""Loading and saving ONNX models: validation on the way in, atomic writes on the way out."""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import numpy_helper

from spa.errors import ModelLoadError, OutputError, UnsupportedModelError

log = logging.getLogger(__name__)

MIN_OPSET = 11
# Protobuf cannot serialise a message over 2 GiB; above this we always use external data.
_EXTERNAL_DATA_THRESHOLD = 1 << 30
# With external data, tensors over this many bytes go to the data file (as onnx does by default).
_EXTERNAL_TENSOR_BYTES = 1024
# Offsets of external tensors are multiples of this (a page), so onnxruntime can map them.
_ALIGN = 4096


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports (0 when absent)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def load_model(path: str | os.PathLike[str], external_data: bool = True) -> onnx.ModelProto:
    """Read and validate an ONNX file, external data included (unless ``external_data`` is False:
    then tensors stored outside the file keep their references, and only the existence of the
    files they name is checked).

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
        model = onnx.load(str(p), load_external_data=external_data)
        if not external_data:
            _check_external_files(model, p)
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


def _check_external_files(model: onnx.ModelProto, path: Path) -> None:
    """Raise FileNotFoundError when a file that external tensors name is missing; load the data
    of small external tensors (up to 1024 elements: shape constants, biases), which checks and
    shape inference read, as :func:`weightless` keeps them."""
    from onnx.external_data_helper import load_external_data_for_tensor

    names = {e.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
             for e in t.external_data if e.key == "location"}
    for name in names:
        if not (path.parent / name).is_file():
            raise FileNotFoundError(2, "No such file", str(path.parent / name))
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL and _elements(t) <= 1024:
            load_external_data_for_tensor(t, str(path.parent))
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]


def check_is_model(model: onnx.ModelProto, where: str = "model") -> None:
    """Reject protobufs that parsed but are not ONNX models, and opsets we do not support."""
    if model.ir_version == 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelLoadError(f"{where}: not an ONNX model (no IR version or empty graph)")

    try:
        # The structural check needs types and shapes, not weight bytes: check a weightless copy.
        onnx.checker.check_model(weightless(model), full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{where}: model fails onnx.checker: {first}") from None
    except UnicodeDecodeError as exc:  # protobuf's Python side reads any bytes; the checker wants UTF-8 names
        raise ModelLoadError(f"{where}: not a valid ONNX file (a name or string is not valid UTF-8: {exc.reason} "
                             f"at byte {exc.start})") from None
    if not model.graph.output:
        raise ModelLoadError(f"{where}: the graph has no outputs, so it computes nothing")
    opset = default_opset(model)
    if opset == 0:
        raise UnsupportedModelError(f"{where}: the model imports no default ONNX opset (domain ''); SPA prunes "
                                    "models of the default domain, opset 11 or newer")
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"{where}: opset {opset} is older than {MIN_OPSET}; upgrade it first with "
            "onnx.version_converter.convert_version(model, 13)"
        )
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UnsupportedModelError(f"{where}: opset {opset} is newer than the newest this onnx {onnx.__version__} "
                                    f"knows ({newest}); convert the model to opset {newest} or older")
    unknown_minus_one(model)
    check_sizes(model, where)


def unknown_minus_one(model: onnx.ModelProto) -> None:
    """Make every ``dim_value: -1`` of the main graph's inputs, outputs and value_info an unknown
    dimension, in place: Paddle2ONNX (PaddleOCR's models) and some older converters write -1 for
    a dynamic axis, and onnxruntime reads it so. Other negative sizes stay errors."""
    g = model.graph
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value == -1:
                    d.ClearField("dim_value")


#: The largest dimension SPA accepts: onnxruntime's kernels index most axes with 32-bit sizes, and
#: a larger one only ever comes from a damaged file (it would exhaust memory long before).
MAX_DIM = (1 << 31) - 1
#: The most elements a graph input may have (16 GiB of float32): SPA feeds every input to onnxruntime.
MAX_INPUT_ELEMENTS = 1 << 32


def _dim_text(d: int) -> str:
    return f"{d} (2^{d.bit_length() - 1})" if d > 0 and d & (d - 1) == 0 else str(d)


def check_sizes(model: onnx.ModelProto, where: str = "model") -> None:
    """Refuse (:class:`ModelLoadError`) negative or huge dimensions (over :data:`MAX_DIM`) in the
    main graph's initializers, Constant nodes, inputs, outputs and value_info, and initializers
    whose stored data does not hold what their dims say (raw data too short or too long, a
    missing value). Tensors whose data is external and not loaded are checked by their dims only."""
    g = model.graph
    tensors = [(t, f"initializer '{t.name}'") for t in g.initializer]
    tensors += [(a.t, f"Constant '{n.output[0] if n.output else n.name}'") for n in g.node
                if n.op_type == "Constant" for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t, what in tensors:
        _check_dims([int(d) for d in t.dims], what, where)
        problem = _data_problem(t)
        if problem:
            raise ModelLoadError(f"{where}: {what} {problem}; the file is damaged or was written wrongly")
    inputs = {i.name for i in g.input}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = [int(d.dim_value) for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
            _check_dims(dims, f"tensor '{vi.name}'", where)
            n = math.prod(dims)
            if vi.name in inputs and n > MAX_INPUT_ELEMENTS:
                raise ModelLoadError(f"{where}: input '{vi.name}' of shape {dims} has {n} elements, too many to run "
                                     f"(at most {MAX_INPUT_ELEMENTS})")


def _check_dims(dims: list[int], what: str, where: str) -> None:
    for d in dims:
        if d < 0:
            raise ModelLoadError(f"{where}: {what} has a negative dimension {d} (shape {dims})")
        if d > MAX_DIM:
            raise ModelLoadError(f"{where}: {what}: dimension {_dim_text(d)} is too large (shape {dims}; "
                                 f"at most {MAX_DIM} per axis)")


#: Typed data fields of a TensorProto by element type, with how many values each element takes.
_TYPED_FIELDS: dict[int, tuple[str, int]] = {
    onnx.TensorProto.FLOAT: ("float_data", 1), onnx.TensorProto.DOUBLE: ("double_data", 1),
    onnx.TensorProto.INT64: ("int64_data", 1), onnx.TensorProto.INT32: ("int32_data", 1),
    onnx.TensorProto.INT16: ("int32_data", 1), onnx.TensorProto.INT8: ("int32_data", 1),
    onnx.TensorProto.UINT16: ("int32_data", 1), onnx.TensorProto.UINT8: ("int32_data", 1),
    onnx.TensorProto.BOOL: ("int32_data", 1), onnx.TensorProto.FLOAT16: ("int32_data", 1),
    onnx.TensorProto.BFLOAT16: ("int32_data", 1), onnx.TensorProto.UINT32: ("uint64_data", 1),
    onnx.TensorProto.UINT64: ("uint64_data", 1), onnx.TensorProto.COMPLEX64: ("float_data", 2),
    onnx.TensorProto.COMPLEX128: ("double_data", 2), onnx.TensorProto.STRING: ("string_data", 1),
}


def _data_problem(t: onnx.TensorProto) -> str:
    """What is wrong with the data ``t`` stores for its dims and type ("" when nothing is, or
    when it cannot tell: external data, element types packed below a byte)."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return ""
    n = _elements(t)
    if t.HasField("raw_data"):
        try:
            size = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            return ""
        if t.data_type in _SUB_BYTE or t.data_type == onnx.TensorProto.STRING:
            return ""
        if len(t.raw_data) != n * size:
            return (f"holds {len(t.raw_data)} bytes of data, but its shape {list(t.dims)} and type "
                    f"{onnx.TensorProto.DataType.Name(t.data_type)} need {n * size}")
        return ""
    field, per = _TYPED_FIELDS.get(t.data_type, ("", 0))
    if not field:
        return ""
    count = len(getattr(t, field))
    if count != n * per:
        return f"holds {count} values, but its shape {list(t.dims)} needs {n}"
    return ""


_SUB_BYTE = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
             if hasattr(onnx.TensorProto, n)}


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

    Models over 1 GiB are written with their tensors in ``<out name>.data`` beside the model and
    checked by path with ``onnx.checker.check_model(full_check=True)``. Either way tensors are
    written one at a time, never the whole model at once. A failure leaves no partial file behind.
    """
    o = Path(out)
    parent = o.parent if str(o.parent) else Path(".")

    big = serialized_size(model) > _EXTERNAL_DATA_THRESHOLD
    tmpdir = ""
    try:
        tmpdir = tempfile.mkdtemp(prefix=".spa-", dir=parent)
        tmp_model = Path(tmpdir) / o.name
        data_name = o.name + ".data"
        if big:
            write_external(model, tmp_model, data_name)
            _check_written(tmp_model)
            os.replace(Path(tmpdir) / data_name, parent / data_name)
        else:
            write_inline(model, tmp_model)
        os.replace(tmp_model, o)
    except OSError as exc:
        raise OutputError(f"{o}: cannot write: {exc}") from None
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    log.debug("wrote %s%s", o, " (+ external data)" if big else "")
    return o


def write_inline(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to one file, serializing one initializer at a time.

    The file is the model without its initializers, followed by one ``graph`` record per
    initializer. Protobuf merges repeated records of a message field, so this parses to exactly
    ``model`` (same bytes when re-serialized), while ``SerializeToString`` of a large model would
    hold its whole encoding, and more, in memory at once.
    """
    graph_tag = _tag(onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number)
    init_tag = _tag(onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number)
    with open(path, "wb") as f:
        f.write(_without_initializers(model).SerializeToString())
        for t in model.graph.initializer:
            data = t.SerializeToString()
            inner = init_tag + _varint(len(data))
            f.write(graph_tag + _varint(len(inner) + len(data)) + inner)
            f.write(data)
            del data


def _tag(field_number: int) -> bytes:
    return _varint(field_number << 3 | 2)  # wire type 2: length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _check_written(path: Path) -> None:
    """The full checker on a written file (by path: external data and > 2 GiB allowed)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutputError(f"the model written to {path.name} fails onnx.checker ({first}); nothing was written") \
            from None


def write_external(model: onnx.ModelProto, path: str | os.PathLike[str], data_name: str,
                   threshold: int = _EXTERNAL_TENSOR_BYTES) -> None:
    """Write ``model`` to ``path`` with every initializer over ``threshold`` bytes in ``data_name``
    (a file in the same folder), without copying the model.

    Tensors are streamed one at a time to page-aligned offsets (onnxruntime can map them), then
    a light copy of the model, whose initializers are references into the data file, is written.
    ``model`` is not changed; memory use stays at one tensor beyond the model itself (onnx's own
    ``save_model(save_as_external_data=True)`` rewrites the message it is given, so it needs a
    whole copy). Constant-node attributes stay inline. Refuses (OutputError) a tensor whose data
    is itself external and not loaded.
    """
    p = Path(path)
    refs: list[onnx.TensorProto] = []
    with open(p.with_name(data_name), "wb") as f:
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                raise OutputError(f"{p}: initializer '{t.name}' has external data that was not loaded")
            if t.data_type == onnx.TensorProto.STRING:
                refs.append(t)  # strings have no raw byte form
                continue
            data = t.raw_data if t.HasField("raw_data") else None
            if data is None and _elements(t) * _itemsize(t) <= threshold:
                refs.append(t)
                continue
            if data is None:
                data = numpy_helper.to_array(t).astype(_little_endian(t), copy=False).tobytes()
            if len(data) <= threshold:
                refs.append(t)
                continue
            offset = f.tell()
            pad = -offset % _ALIGN
            if pad:
                f.write(b"\0" * pad)
                offset += pad
            f.write(data)
            ref = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims, doc_string=t.doc_string,
                                   data_location=onnx.TensorProto.EXTERNAL)
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(data)))):
                ref.external_data.add(key=key, value=value)
            refs.append(ref)
            del data
    light = _without_initializers(model)
    light.graph.initializer.extend(refs)
    p.write_bytes(light.SerializeToString())


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every field but ``graph.initializer``."""
    light = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(light, fd, value)
    for fd, value in model.graph.ListFields():
        if fd.name != "initializer":
            _copy_field(light.graph, fd, value)
    return light


def _copy_field(dst: Message, fd: FieldDescriptor, value: object) -> None:
    """Copy field ``fd`` (holding ``value``) into ``dst``: a message, a repeated field or a scalar."""
    name = fd.name
    if hasattr(value, "CopyFrom"):  # a message
        getattr(dst, name).CopyFrom(value)
    elif hasattr(value, "extend") and not isinstance(value, (str, bytes)):  # a repeated field
        getattr(dst, name).extend(value)
    else:
        setattr(dst, name, value)


def _elements(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def _itemsize(t: onnx.TensorProto) -> int:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 1


def _little_endian(t: onnx.TensorProto) -> np.dtype:
    return onnx.helper.tensor_dtype_to_np_dtype(t.data_type).newbyteorder("<")


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


def weightless(model: onnx.ModelProto, threshold: int = 1024,
               keep: Callable[[onnx.TensorProto], bool] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers over ``threshold`` elements became typed inputs
    (except those ``keep`` accepts).

    Shape inference and the structural checker only need the types and shapes of large weights;
    copying and serialising their bytes dominates their cost on large models.
    """
    light = onnx.ModelProto()
    g = model.graph
    for field_name in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, field_name, getattr(model, field_name))
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    declared = {i.name for i in g.input}
    for t in g.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= threshold or (keep is not None and keep(t)):
            lg.initializer.append(t)
        elif t.name not in declared:
            lg.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def serialized_size(model: onnx.ModelProto) -> int:
    """Bytes of the serialized model, weights included (external data counted as stored).

    Computed as the weightless graph's size plus each large tensor's payload, which avoids
    encoding hundreds of megabytes of weights just to count them (exact to a few bytes per
    tensor).
    """

    payload = 0
    for t in model.graph.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) > 1024:
            payload += _tensor_bytes(t)
    return weightless(model).ByteSize() + payload


_RAW_ITEMSIZE: dict[int, int] = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.FLOAT16: 2,
                 onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4,
                 onnx.TensorProto.INT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
                 onnx.TensorProto.BOOL: 1}


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.HasField("raw_data"):
        itemsize = _RAW_ITEMSIZE.get(t.data_type)
        # Reading raw_data to take its length would copy the tensor's bytes.
        return int(np.prod(t.dims, dtype=np.int64)) * itemsize if itemsize else len(t.raw_data)
    for loc in t.external_data:
        if loc.key == "length":
            return int(loc.value)
    n = int(np.prod(t.dims, dtype=np.int64))
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if t.data_type else 0
