"""Valid synthetic values for a model's inputs, derived from the graph.

Random numbers are fine for a float image, not for a token model: an id at or past the
vocabulary makes an embedding Gather fail, and a KV-cache decoder needs its attention mask as
long as the cache plus the new tokens. :func:`derive_domains` reads, for every graph input, what
values the graph accepts (an :class:`InputDomain`):

* **indices**: an integer input that reaches the indices of a Gather, GatherElements, GatherND
  or ``EmbedLayerNormalization``, directly or through ops that keep its values (Cast, Unsqueeze,
  Reshape, Expand, Slice, Concat, …) or shift them by a constant (Add, Sub), gets values in
  ``[low, high)``: below the table's size along the gathered axis on every such path;
* **positions**: an integer input named like ``position_ids`` counts ``past, past+1, …`` along
  its last axis (below the position table when one is gathered, wrapping around otherwise);
* **mask**: an input named like ``attention_mask`` is all ones. A mask with zeros would be
  valid too, but a row that masks every key makes an exported softmax return NaN;
* **cache**: a float input named like ``past_key_values.*``, ``past.*`` or ``*cache*``; the
  symbolic dims on its non-batch axes are the *past length*, 0 by default (the prefill step:
  an empty cache). A mask whose length is an expression such as
  ``past_sequence_length + sequence_length`` gets that sum; a mask with a plain symbolic length
  in a model with a cache gets the past plus the token sequence length;
* **float** and **bool**: ``N(0, 1)`` and fair coin flips, as before;
* **axes**: an integer input used only as the ``axes`` of Unsqueeze, Slice or a Reduce op (whose
  data rank the graph tells) gets distinct axes within that rank;
* **integer**: an integer input nothing in the graph bounds. It keeps the old draw from
  ``[0, 10)`` and is marked ``derived=False``: when onnxruntime then fails, the error names it
  and asks for real values (``--inputs DATA.npz``, see :class:`SuppliedInputs`).

It does not follow values through arithmetic other than a constant shift, nor guess the range of
inputs used as sizes or shapes (those stay ``integer``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from spa.errors import InputSynthesisError, SpaError
from spa.model.graph import attr_int, known

log = logging.getLogger(__name__)

NP_TYPES: dict[int, type[np.generic]] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.BOOL: np.bool_,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8,
}

Dims = list[int | str | None]

#: Kinds of input value domains (see the module docstring).
Kind = Literal["float", "bool", "indices", "positions", "mask", "cache", "axes", "integer"]

_CACHE_NAME = re.compile(r"(^|[._/])(past|cache)|key_values|^present", re.IGNORECASE)
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPR = re.compile(r"^[A-Za-z0-9_+\-* ]+$")

# Ops whose output 0 carries the values of these inputs (possibly moved, repeated or selected).
_KEEPS_VALUES: dict[str, tuple[int, ...] | None] = {
    "Cast": (0,), "Identity": (0,), "Unsqueeze": (0,), "Squeeze": (0,), "Reshape": (0,), "Flatten": (0,),
    "Expand": (0,), "Slice": (0,), "Transpose": (0,), "Tile": (0,), "Gather": (0,), "GatherElements": (0,),
    "GatherND": (0,), "Where": (1, 2), "Concat": None,  # None: every input
}
#: Integer constants of at most this many values an input may be compared with (one-hot encodings,
#: as tf2onnx writes ``jax.nn.one_hot``: ``Equal(x, [0, 1, ..., 256])``) bound its values.
_MAX_CATEGORIES = 1 << 16
_INT_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
              onnx.TensorProto.UINT8, onnx.TensorProto.UINT16)
# Index operands: (op, index input) -> data input whose size along the gathered axis bounds them.
_INDEX_OF: dict[tuple[str, int], int] = {
    ("Gather", 1): 0, ("GatherElements", 1): 0, ("GatherND", 1): 0,
    ("EmbedLayerNormalization", 0): 2, ("EmbedLayerNormalization", 1): 4, ("EmbedLayerNormalization", 8): 3,
}

# Axes operands: (op, input) -> the data input whose rank bounds them (Squeeze is left out: its
# axes must also name dims of size 1).
_AXES_OF: dict[tuple[str, int], int] = {
    ("Unsqueeze", 1): 0, ("Slice", 3): 0,
    **{(f"Reduce{r}", 1): 0 for r in ("Sum", "Mean", "Max", "Min", "Prod", "L1", "L2", "LogSum", "LogSumExp",
                                       "SumSquare")},
}


@dataclass(frozen=True)
class InputDomain:
    """The values SPA draws for one graph input.

    ``low``/``high`` bound ``indices`` and ``positions`` (``high`` exclusive, None when nothing
    bounds it); ``derived`` is False for an integer input whose range the graph does not tell.
    """

    name: str
    dims: tuple[int | str | None, ...]
    elem_type: int
    kind: Kind
    low: int = 0
    high: int | None = None
    derived: bool = True
    why: str = ""

    @property
    def dtype(self) -> type:
        dtype = NP_TYPES.get(self.elem_type)
        if dtype is None:
            raise SpaError(f"input '{self.name}' has element type {onnx.TensorProto.DataType.Name(self.elem_type)}, "
                           "which SPA cannot generate; pass its values with --inputs DATA.npz")
        return dtype


@dataclass(frozen=True)
class InputDomains:
    """Every input's domain, and the symbolic dims that are the KV cache's past length."""

    inputs: tuple[InputDomain, ...]
    past: frozenset[str]

    def underived(self) -> list[InputDomain]:
        return [d for d in self.inputs if not d.derived]

    def past_in(self, shapes: dict[str, tuple[int, ...]]) -> int:
        """The past length in concrete input ``shapes`` (0 for a model without a cache)."""
        return self.past_length({dim: size for d in self.inputs for dim, size in zip(d.dims, shapes.get(d.name, ()))
                                 if isinstance(dim, str)})

    def past_length(self, bound: dict[str, int]) -> int:
        """The past length under the symbol sizes ``bound`` (0 for a model without a cache)."""
        return next((bound[p] for p in sorted(self.past) if p in bound), 0)


def input_specs(model: onnx.ModelProto) -> list[tuple[str, Dims, int]]:
    """``(name, dims, elem_type)`` for every real graph input (initializers excluded)."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims: Dims = [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        specs.append((i.name, dims, tt.elem_type))
    return specs


# ---- deriving the domains ----------------------------------------------------------------------

class _Graph:
    """The little of a model the derivation reads: consumers, static shapes, integer constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in g.node:
            for t in dict.fromkeys(node.input):
                if t:
                    self.consumers[t].append(node)
        self.shapes: dict[str, list[int | None]] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            dims = vi.type.tensor_type.shape.dim
            self.shapes[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else None for d in dims]
        self.scalars: dict[str, int] = {}
        self.categories: dict[str, np.ndarray] = {}  # small integer constants an input may be compared with
        for t in g.initializer:
            self.shapes[t.name] = list(t.dims)
            if int(np.prod(t.dims)) == 1 and t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
                self.scalars[t.name] = int(numpy_helper.to_array(t).reshape(-1)[0])
            elif 1 < int(np.prod(t.dims)) <= _MAX_CATEGORIES and t.data_type in _INT_TYPES:
                self.categories[t.name] = numpy_helper.to_array(t).reshape(-1).astype(np.int64)
        for node in g.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                arr = numpy_helper.to_array(node.attribute[0].t)
                self.shapes[node.output[0]] = list(arr.shape)
                if arr.size == 1 and arr.dtype.kind in "iu":
                    self.scalars[node.output[0]] = int(arr.reshape(-1)[0])
                elif 1 < arr.size <= _MAX_CATEGORIES and arr.dtype.kind in "iu":
                    self.categories[node.output[0]] = arr.reshape(-1).astype(np.int64)

    def table_size(self, node: onnx.NodeProto, data: int) -> int | None:
        """The size of the axis ``node`` gathers from its input ``data``, when static."""
        shape = self.shapes.get(node.input[data]) if len(node.input) > data else None
        if not shape:
            return None
        if node.op_type == "GatherND":
            sizes = shape[attr_int(node, "batch_dims", 0):]
            static = known(sizes)
            return min(static) if static else None
        axis = 0 if node.op_type == "EmbedLayerNormalization" else attr_int(node, "axis", 0)
        return shape[axis] if -len(shape) <= axis < len(shape) else None


def index_bounds(graph: _Graph, name: str) -> tuple[int, int] | None:
    """``[low, high)`` for the values of tensor ``name`` that keep every index it reaches in
    range, and that span the categories it is compared with (a one-hot ``Equal`` against a constant
    vector); None when it reaches neither."""
    low, high, found = 0, None, False
    seen: set[tuple[str, int]] = set()
    todo = [(name, 0)]  # (tensor, offset): the tensor's values are the input's plus offset
    while todo:
        t, off = todo.pop()
        if (t, off) in seen:
            continue
        seen.add((t, off))
        for node in graph.consumers.get(t, ()):
            for k, inp in enumerate(node.input):
                if inp != t:
                    continue
                data = _INDEX_OF.get((node.op_type, k))
                size = graph.table_size(node, data) if data is not None else None
                if size is not None:
                    found = True
                    low, high = max(low, -off), size - off if high is None else min(high, size - off)
                if node.op_type == "Equal" and len(node.input) == 2 and node.input[1 - k] in graph.categories:
                    values = graph.categories[node.input[1 - k]] - off  # one-hot: compared with each category
                    found = True
                    low = max(low, int(values.min()))
                    high = int(values.max()) + 1 if high is None else min(high, int(values.max()) + 1)
                keeps = _KEEPS_VALUES.get(node.op_type, ())
                if node.op_type in _KEEPS_VALUES and (keeps is None or k in keeps):
                    todo.append((node.output[0], off))
                elif node.op_type in ("Add", "Sub") and len(node.input) == 2:
                    other = node.input[1 - k]
                    if other in graph.scalars and not (node.op_type == "Sub" and k == 1):
                        step = graph.scalars[other] * (1 if node.op_type == "Add" else -1)
                        todo.append((node.output[0], off + step))
    if not found or high is None or high <= low:
        return None
    return low, high


def axes_bound(graph: _Graph, name: str) -> int | None:
    """The rank that bounds the axes input ``name`` when every use of it is an axes operand
    whose data rank is known (Unsqueeze: the output's rank), else None."""
    uses = [(node, k) for node in graph.consumers.get(name, ()) for k, t in enumerate(node.input) if t == name]
    ranks = []
    for node, k in uses:
        data = _AXES_OF.get((node.op_type, k))
        shape = graph.shapes.get(node.input[data]) if data is not None else None
        if shape is None:
            return None
        count = graph.shapes.get(name)
        if node.op_type == "Unsqueeze":
            if not count or count[0] is None:
                return None
            ranks.append(len(shape) + int(count[0]))
        else:
            ranks.append(len(shape))
    return min(ranks) if ranks else None


def _kind(name: str, elem_type: int) -> Kind:
    lname = name.lower()
    if "mask" in lname:
        return "mask"
    if elem_type == onnx.TensorProto.BOOL:
        return "bool"
    if NP_TYPES.get(elem_type) is not None and np.issubdtype(NP_TYPES[elem_type], np.floating):
        return "cache" if _CACHE_NAME.search(name) else "float"
    if "position" in lname:
        return "positions"
    return "integer"


def derive_domains(model: onnx.ModelProto) -> InputDomains:
    """Every real input's :class:`InputDomain` (see the module docstring for the rules)."""
    graph = _Graph(model)
    specs = input_specs(model)
    out: list[InputDomain] = []
    for name, dims, et in specs:
        kind = _kind(name, et)
        bounds = index_bounds(graph, name) if kind in ("integer", "positions") else None
        if kind == "integer" and bounds is not None:
            out.append(InputDomain(name, tuple(dims), et, "indices", bounds[0], bounds[1],
                                   why=f"indices into a table of {bounds[1]}"))
        elif kind == "integer" and (rank := axes_bound(graph, name)) is not None:
            out.append(InputDomain(name, tuple(dims), et, "axes", 0, rank, why=f"axes of a rank-{rank} tensor"))
        elif kind == "positions":
            low, high = bounds if bounds is not None else (0, None)
            out.append(InputDomain(name, tuple(dims), et, kind, low, high, why="positions"))
        else:
            out.append(InputDomain(name, tuple(dims), et, kind, derived=kind != "integer",
                                   why="no bounding use found in the graph" if kind == "integer" else kind))
    past = _past_symbols(out)
    log.debug("input domains: %s", "; ".join(f"{d.name} {d.kind}" + (f" [{d.low}, {d.high})" if d.high is not None
                                                                       else "") for d in out))
    return InputDomains(tuple(out), past)


def _past_symbols(domains: list[InputDomain]) -> frozenset[str]:
    """Symbolic dims on the non-batch axes of cache inputs that no other input uses on its own."""
    elsewhere = {d for x in domains if x.kind != "cache" for d in x.dims if isinstance(d, str)}
    first = {x.dims[0] for x in domains if x.dims and isinstance(x.dims[0], str)}
    found = {d for x in domains if x.kind == "cache" for d in x.dims[1:]
             if isinstance(d, str) and _SYMBOL.match(d) and d not in elsewhere and d not in first}
    named = {d for x in domains for d in x.dims if isinstance(d, str) and _SYMBOL.match(d) and "past" in d.lower()}
    return frozenset(found | named)


# ---- sizes ---------------------------------------------------------------------------------------

def _symbols(expr: str) -> list[str]:
    return re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr)


def _evaluate(expr: str, bound: dict[str, int]) -> int | None:
    """The size of a dim written as an expression of other dims (``past + seq``), or None."""
    if not _EXPR.match(expr) or any(s not in bound for s in _symbols(expr)):
        return None
    value = re.sub(r"[A-Za-z_][A-Za-z0-9_]*", lambda m: str(bound[m.group(0)]), expr)
    if not re.fullmatch(r"[0-9+\-* ]+", value):
        return None
    total = 0
    for term in re.findall(r"[+-]?[^+-]+", value.replace(" ", "")):
        sign = -1 if term.startswith("-") else 1
        prod = 1
        for factor in term.lstrip("+-").split("*"):
            prod *= int(factor)
        total += sign * prod
    return total


def resolve_shapes(domains: InputDomains, hints: dict[str, list[int]] | None,
                   default: Callable[[InputDomain, int], int]) -> dict[str, tuple[int, ...]]:
    """A concrete, mutually consistent shape for every input.

    Static sizes are kept. A symbolic dim gets one size wherever it occurs: the size ``hints``
    gives it, else 0 for the past length, else ``default(domain, axis)``. Inputs named in
    ``hints`` keep the hinted shape, except a dim that is an expression of others (or a mask's
    length in a cached model), which must agree with them to be valid.
    """
    ranks = {d.name: len(d.dims) for d in domains.inputs}
    hints = {k: list(v) for k, v in (hints or {}).items() if len(v) == ranks.get(k)}  # callers check ranks
    bound: dict[str, int] = {}
    for d in domains.inputs:
        for k, dim in enumerate(d.dims):
            if d.name in hints and isinstance(dim, str) and _SYMBOL.match(dim):
                bound.setdefault(dim, int(hints[d.name][k]))
    for p in domains.past:
        bound.setdefault(p, 0)
    shapes: dict[str, tuple[int, ...]] = {}
    for d in domains.inputs:
        shape = []
        for k, dim in enumerate(d.dims):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif isinstance(dim, str) and _SYMBOL.match(dim):
                shape.append(bound.setdefault(dim, hints[d.name][k] if d.name in hints else default(d, k)))
            else:
                shape.append(hints[d.name][k] if d.name in hints else default(d, k))
        shapes[d.name] = tuple(shape)
    for d in domains.inputs:  # expressions, once every plain symbol has its size
        for k, dim in enumerate(d.dims):
            value = _evaluate(dim, bound) if isinstance(dim, str) and not _SYMBOL.match(dim) else None
            if value is not None:
                shapes[d.name] = shapes[d.name][:k] + (value,) + shapes[d.name][k + 1:]
    _fit_masks(domains, bound, shapes)
    return shapes


def _fit_masks(domains: InputDomains, bound: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> None:
    """In a model with a KV cache, a mask with a plain symbolic length covers past and new tokens."""
    tokens = next((d for d in domains.inputs if d.kind in ("indices", "positions") and len(d.dims) >= 2), None)
    if not domains.past or tokens is None:
        return
    total = domains.past_length(bound) + shapes[tokens.name][-1]
    for d in domains.inputs:
        last = d.dims[-1] if d.dims else 0
        if d.kind == "mask" and len(d.dims) == 2 and not (isinstance(last, int) and last > 0) \
                and (last is None or isinstance(last, str) and _SYMBOL.match(last) is not None) and last != tokens.dims[-1]:
            shapes[d.name] = shapes[d.name][:-1] + (total,)


# ---- values --------------------------------------------------------------------------------------

def draw(domain: InputDomain, shape: tuple[int, ...], rng: np.random.Generator, past: int = 0) -> np.ndarray:
    """Values of ``domain`` with ``shape`` (``past``: the cache length, where positions start).

    Floats and integers consume ``rng`` as :func:`spa.model.runtime.random_inputs` always has, so a
    model without token inputs gets the same numbers as before."""
    dtype = domain.dtype
    if domain.kind == "mask":
        return np.ones(shape, dtype=dtype)
    if domain.kind in ("float", "cache"):
        return rng.standard_normal(shape).astype(dtype)
    if domain.kind == "bool":
        return np.asarray(rng.random(shape) < 0.5)  # an ndarray even for a scalar: onnxruntime takes no numpy.bool
    if domain.kind == "positions":
        count = past + np.arange(shape[-1] if shape else 1, dtype=np.int64)
        if domain.high is not None:
            count = domain.low + count % (domain.high - domain.low)
        return np.broadcast_to(count, shape).astype(dtype)
    if domain.kind == "axes" and domain.high is not None and int(np.prod(shape)) <= domain.high:
        return rng.permutation(domain.high)[:int(np.prod(shape))].reshape(shape).astype(dtype)  # distinct
    high = domain.high if domain.high is not None else max(10, domain.low + 1)
    return rng.integers(domain.low, high, size=shape).astype(dtype)


# ---- real inputs: --inputs DATA.npz ------------------------------------------------------------

@dataclass(frozen=True)
class SuppliedInputs:
    """Arrays keyed by input name (``--inputs DATA.npz``) that replace synthetic values.

    Asked for other sizes than its own, an array is cut to the first entries along each axis or
    repeated cyclically (a prefix of real tokens is still real tokens)."""

    arrays: dict[str, np.ndarray]
    source: str

    def covers(self, names: list[str]) -> bool:
        return all(n in self.arrays for n in names)

    def fit(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The array of input ``name`` cut or repeated to ``shape``; None when an empty axis
        would have to fill a size (an empty cache asked for a past length)."""
        a = self.arrays[name]
        if any(have == 0 < want for have, want in zip(a.shape, shape)):
            return None
        for axis, size in enumerate(shape):
            if a.shape[axis] != size:
                a = np.take(a, np.arange(size) % a.shape[axis], axis=axis)
        return np.ascontiguousarray(a)


_SUPPLIED: contextvars.ContextVar[SuppliedInputs | None] = contextvars.ContextVar("spa_supplied_inputs", default=None)


def supplied() -> SuppliedInputs | None:
    """The inputs set by :func:`use_inputs`, if any."""
    return _SUPPLIED.get()


@contextlib.contextmanager
def use_inputs(inputs: SuppliedInputs | None) -> Iterator[None]:
    """Within the block, :func:`spa.model.runtime.random_inputs` returns ``inputs`` (fitted to the
    sizes asked for) for every model whose inputs they all name, instead of synthetic values."""
    token = _SUPPLIED.set(inputs)
    try:
        yield
    finally:
        _SUPPLIED.reset(token)


# ---- when onnxruntime refuses the synthetic values ----------------------------------------------

def is_runtime_error(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by onnxruntime (its exceptions derive from Exception only)."""
    return type(exc).__module__.startswith("onnxruntime")


def _runtime_message(text: str) -> str:
    """onnxruntime's message without its ``source.h:91 namespace::Function(args...)`` prefix."""
    if not re.match(r"^\S+\.(h|cc|cpp):\d+ ", text) or "(" not in text:
        return text
    depth = 0
    for k in range(text.index("("), len(text)):
        depth += {"(": 1, ")": -1}.get(text[k], 0)
        if depth == 0:
            return text[k + 1:].strip() or text
    return text


def synthesis_error(model: onnx.ModelProto, exc: BaseException) -> InputSynthesisError:
    """A one-line error for onnxruntime failing on synthetic inputs of ``model``."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = _runtime_message(first.split("Status Message:")[-1].strip() if "Status Message:" in first else first)
    node = re.search(r"node\. Name:'([^']*)'", text)
    at = f" at node '{node.group(1)}'" if node else ""
    lost = derive_domains(model).underived()
    if lost:
        names = ", ".join(f"'{d.name}' ({np.dtype(d.dtype).name})" for d in lost)
        why = f"SPA could not synthesise valid values for input {names}: nothing in the graph bounds them"
    else:
        why = "the synthetic inputs may be invalid for this model"
    return InputSynthesisError(f"onnxruntime failed on synthetic inputs{at} ({first}); {why}; "
                               "pass real inputs with --inputs DATA.npz")
