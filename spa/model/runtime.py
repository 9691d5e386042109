"""onnxruntime sessions with explicit providers, and seeded random inputs.

SPA never lets onnxruntime pick providers: ``device="cpu"`` always means the CPU execution
provider, ``device="cuda"`` means CUDA (with CPU for unsupported ops) and fails clearly when
the installed onnxruntime build has no CUDA provider. ``device="auto"`` means CUDA where it
works on this machine and the CPU otherwise, with a warning that says why
(:func:`resolve_device`).
"""

from __future__ import annotations

import functools
import logging
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from spa.errors import InvalidArgumentError, SpaError
from spa.model.inputs import derive_domains, draw, resolve_shapes, supplied
from spa.model.inputs import input_specs as input_specs  # re-exported: its home was here
from spa.model.io import serialized_size, write_external

log = logging.getLogger(__name__)

_ORT_DISTS = ("onnxruntime", "onnxruntime-gpu")
# Protobuf cannot serialize a message of 2 GiB or more: bigger models reach onnxruntime through a
# temporary file with external data (the margin keeps the check cheap and safe).
INLINE_LIMIT = 1 << 30


def installed_runtimes() -> list[str]:
    """The onnxruntime distributions pip has installed (two means they clash)."""
    found = []
    for d in _ORT_DISTS:
        try:
            found.append(f"{d}=={metadata.version(d)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise SpaError(
            "onnxruntime cannot be imported "
            f"({exc}); installed: {installed_runtimes() or 'none'}. Repair with: "
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime "
            "(or onnxruntime-gpu for CUDA)"
        ) from None
    return ort


DEVICES = ("cpu", "cuda", "auto")


def runtime_errors() -> tuple[type[BaseException], ...]:
    """The exception types onnxruntime raises when it cannot load or run a model: RuntimeError
    and its own status types (``Fail``, ``InvalidArgument``, ``NotImplemented``...), which do not
    derive from RuntimeError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = [c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception)]
    return (RuntimeError, *found)


def resolve_device(device: str) -> str:
    """``device`` itself for "cpu" and "cuda"; for "auto", "cuda" when onnxruntime has a CUDA
    provider that really runs a model here (a build with the provider but no GPU or no CUDA
    libraries silently runs on the CPU), else "cpu" with a warning that says why."""
    if device != "auto":
        providers_for(device)  # refuses unknown devices and a missing CUDA provider
        return device
    why = _cuda_unusable()
    if why is None:
        return "cuda"
    log.warning("--device auto: %s; running on the CPU", why)
    return "cpu"


@functools.lru_cache(maxsize=1)
def _cuda_unusable() -> str | None:
    """Why onnxruntime cannot run on CUDA here, or None when it can (checked once per process)."""
    available = _ort().get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return f"this onnxruntime build has no CUDA provider (available: {', '.join(available)})"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    tiny = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "probe",
                                                         [x], [y]),
                                  opset_imports=[onnx.helper.make_opsetid("", 17)])
    try:
        used = make_session(tiny, "cuda").get_providers()
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several exception types
        return f"the CUDA provider failed to start ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
    if "CUDAExecutionProvider" not in used:
        return "the CUDA provider is installed but cannot run here (no GPU, or CUDA/cuDNN libraries missing)"
    return None


def providers_for(device: str) -> list[str]:
    """The explicit provider list for ``device`` ("cpu", "cuda" or "auto")."""
    if device == "auto":
        device = resolve_device(device)
    ort = _ort()
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise SpaError(
                "--device cuda: this onnxruntime build has no CUDA provider "
                f"(available: {', '.join(available)}); see README 'GPU runtime'"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InvalidArgumentError(f"--device must be 'cpu', 'cuda' or 'auto', got '{device}'")


def make_session(model: onnx.ModelProto | str | bytes, device: str = "cpu", threads: int = 0,
                 basic: bool = False) -> Any:
    """An InferenceSession on ``device`` (``threads`` 0 lets onnxruntime choose) from a model,
    a path, or serialized bytes. ``basic`` keeps onnxruntime to its basic graph optimisations
    (for sessions that read intermediate tensors, see :class:`spa.model.shapes.ShapeProbe`)."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: every error onnxruntime logs is also raised, and SPA reports it once
    if basic:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = threads
    providers = providers_for(device)
    if isinstance(model, (str, bytes)):
        return ort.InferenceSession(model, sess_options=opts, providers=providers)

    if serialized_size(model) <= INLINE_LIMIT:
        return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=providers)

    with tempfile.TemporaryDirectory(prefix=".spa-ort-") as d:
        path = Path(d) / "model.onnx"
        write_external(model, path, "model.onnx.data")
        log.debug("model over %d bytes: onnxruntime loads it from external data in %s", INLINE_LIMIT, d)
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def random_inputs(
    model: onnx.ModelProto, seed: int = 0, shapes: dict[str, list[int]] | None = None, batch: int = 1
) -> dict[str, np.ndarray]:
    """Seeded feeds with values the graph accepts (:mod:`spa.model.inputs`): floats ~ N(0, 1), token
    ids below their table, positions counting from the cache length, masks of ones, an empty KV
    cache, other integers in [0, 10), booleans at random.

    Symbolic dims take ``batch`` on axis 0 and 1 elsewhere (0 for a cache's past length) unless
    ``shapes`` names the input; a dim that is an expression of others (``past + seq``) follows
    them. Within :func:`spa.model.inputs.use_inputs`, the arrays given there (``--inputs``) are used
    instead: as they are without ``shapes``, else fitted to them (synthetic values where an empty
    array, such as a prefill's cache, cannot fill a size).
    """
    domains = derive_domains(model)
    given = supplied()
    if given is not None and not given.covers([d.name for d in domains.inputs]):
        given = None
    if given is not None and not shapes:
        return {d.name: given.arrays[d.name] for d in domains.inputs}
    hints = {**{k: list(v.shape) for k, v in given.arrays.items()}, **(shapes or {})} if given else shapes
    sizes = resolve_shapes(domains, hints, lambda d, k: batch if k == 0 else 1)
    past = domains.past_in(sizes)
    rng = np.random.default_rng(seed)
    feeds = {}
    for d in domains.inputs:
        real = given.fit(d.name, sizes[d.name]) if given is not None else None
        feeds[d.name] = real if real is not None else draw(d, sizes[d.name], rng, past)
    return feeds


def run(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def probe_session(model: onnx.ModelProto, tensors: list[str], device: str = "cpu") -> Any:
    """A session of ``model`` that also returns the intermediate ``tensors`` as outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in existing)
    return make_session(probe, device)
