"""Any ONNX model as a trainable torch module: gradients and fine-tuning without the source framework.

    from spa.model.onnx_torch import convert
    module = convert("model.onnx")              # a torch.nn.Module that computes what the graph computes
    logits = module(torch.randn(8, 3, 32, 32))  # inputs in graph order (or by name)
    loss.backward()                             # gradients reach every weight
    dict(module.named_parameters())["layer1.0.conv1.weight"]   # named as the ONNX initializers
    trained = module.to_onnx()                  # the same graph with the current weights

The graph is interpreted node by node with one torch function per op (:mod:`spa.model.onnx_torch_ops`),
so it works for a model from any exporter or framework, as long as every op is in the table
(:data:`SUPPORTED_OPS`); anything else is refused up front with one error naming the ops.

Every float initializer becomes an ``nn.Parameter`` whose qualified name is the initializer's
name (``layer1.0.conv1.weight`` is parameter ``weight`` of sub-module ``layer1.0.conv1``; a name
that cannot be a module path is registered flat as ``initializer_<k>``: :meth:`OnnxModule.tensor`
finds either). BatchNorm running statistics, integer initializers and the float inputs that are
settings rather than weights (Clip bounds, Pow exponents, Pad values, Resize scales) become
buffers; ``Constant`` node values are non-persistent buffers.
So ``module.state_dict()`` is keyed by the initializer names and ``module.parameters()`` is what
a torch model of the same layers would train.

What it is not: BatchNorm runs in inference form (running statistics, no batch statistics and no
running-average updates, even in ``train()`` mode), Dropout is the identity, and sizes computed
from shapes are re-evaluated every call. It is an interpreter, not a compiler: expect eager
speed. ``import spa`` never imports torch; only importing this module does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from spa.errors import UnsupportedModelError
from spa.model.io import load_model
from spa.model.onnx_torch_ops import OPS, NodeInfo, to_tensor

log = logging.getLogger(__name__)

__all__ = ["SUPPORTED_OPS", "OnnxModule", "convert"]

#: ONNX op types (default domain) the converter implements.
SUPPORTED_OPS: frozenset[str] = frozenset(OPS)

#: Inputs that are statistics or sizes rather than weights: registered as buffers, not parameters.
_NOT_TRAINED = {"BatchNormalization": (3, 4), "Resize": (1, 2, 3), "Upsample": (1,), "Clip": (1, 2), "Pow": (1,),
                "Pad": (1, 2, 3), "Range": (0, 1, 2), "ConstantOfShape": (0,)}
_DEFAULT_DOMAINS = ("", "ai.onnx")


class _Node:
    """One ONNX node, ready to run."""

    __slots__ = ("attrs", "fn", "info", "inputs", "outputs")

    def __init__(self, node: onnx.NodeProto, opset: int) -> None:
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.attrs = _attributes(node)
        self.info = NodeInfo(node.op_type, node.name, opset, len(node.output))
        self.fn = OPS[node.op_type]


class OnnxModule(nn.Module):
    """An ONNX graph as a ``torch.nn.Module`` (see the module docstring). Build it with :func:`convert`."""

    def __init__(self, model: onnx.ModelProto, untie: bool = True) -> None:
        super().__init__()
        model = _prepared(model)
        g = model.graph
        opset = next((i.version for i in model.opset_import if i.domain in _DEFAULT_DOMAINS), 0)
        _check_supported(g)
        stored = {t.name: t for t in g.initializer}
        self.input_names: list[str] = [i.name for i in g.input if i.name not in stored]
        self.output_names: list[str] = [o.name for o in g.output]
        views = _views(g, stored) if untie else {}
        not_trained = {node.input[i] for node in g.node for i in _NOT_TRAINED.get(node.op_type, ())
                       if i < len(node.input)}
        #: ONNX tensor name -> qualified name of the parameter or buffer that holds it.
        self._where: dict[str, str] = {}
        #: (name, ONNX type) of every tensor to_onnx writes as an initializer: initializers, then views.
        self._initializers: list[tuple[str, int]] = []
        read = {i for node in g.node if node.output[0] not in views for i in node.input} | set(self.output_names)
        for name, init in stored.items():
            if name in read or name not in views.values():  # an initializer read only through views is dropped
                self._add_initializer(name, init, numpy_helper.to_array(init), name not in not_trained)
        for view, src in views.items():
            self._add_initializer(view, stored[src], numpy_helper.to_array(stored[src]), view not in not_trained)
        self._nodes: list[_Node] = []
        for k, node in enumerate(g.node):
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                value = OPS["Constant"]([], _attributes(node), NodeInfo("Constant", node.name, opset))
                self._where[node.output[0]] = self._register(node.output[0], value, False, False, f"constant_{k}")
            elif node.output[0] not in views:
                self._nodes.append(_Node(node, opset))
        self._graph = _without_initializers(model, set(views))

    def _add_initializer(self, name: str, init: onnx.TensorProto, array: np.ndarray, trainable: bool) -> None:
        value = to_tensor(array)
        trained = trainable and value.is_floating_point()
        self._where[name] = self._register(name, value, trained, True, f"initializer_{len(self._initializers)}")
        self._initializers.append((name, init.data_type))

    def _register(self, name: str, value: torch.Tensor, trained: bool, persistent: bool, fallback: str) -> str:
        """Register ``value`` under the module path ``name`` (or ``fallback``); returns the qualified name."""
        owner, leaf = _owner(self, name)
        if owner is None:
            owner, leaf, name = self, fallback, fallback
        if trained:
            owner.register_parameter(leaf, nn.Parameter(value))
        else:
            owner.register_buffer(leaf, value, persistent=persistent)
        return name

    # ---- tensors ---------------------------------------------------------------------------
    def tensor(self, name: str) -> torch.Tensor:
        """The parameter or buffer holding initializer (or Constant output) ``name``."""
        try:
            qualified = self._where[name]
        except KeyError:
            raise KeyError(f"no initializer or constant named {name!r}") from None
        owner_path, _, leaf = qualified.rpartition(".")
        owner = self.get_submodule(owner_path) if owner_path else self
        return getattr(owner, leaf)

    def onnx_tensors(self) -> dict[str, torch.Tensor]:
        """Every initializer's current tensor, keyed by its ONNX name (graph order)."""
        return {name: self.tensor(name) for name, _ in self._initializers}

    def to_onnx(self) -> onnx.ModelProto:
        """The converted graph with every initializer set to the module's current value."""
        out = onnx.ModelProto()
        out.CopyFrom(self._graph)
        for name, data_type in self._initializers:
            value = self.tensor(name).detach().cpu()
            array = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
            tensor = numpy_helper.from_array(array.astype(helper.tensor_dtype_to_np_dtype(data_type)), name)
            out.graph.initializer.append(tensor)
        return out

    # ---- running ---------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Inputs in graph order (or by name); returns the output, or a tuple of them."""
        if len(args) > len(self.input_names):
            raise TypeError(f"the model takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                            f"got {len(args)}")
        feeds = dict(zip(self.input_names, args))
        feeds.update(kwargs)
        env = self.run(feeds)
        outs = tuple(env[o] for o in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    def run(self, feeds: Mapping[str, Any], watch: Collection[str] = ()) -> dict[str, Any]:
        """Run the graph; returns the outputs and every tensor named in ``watch``, by name.

        A watched float tensor that does not require grad (a buffer, a Constant, or a value
        computed from them only) is replaced by a leaf that does, so that
        ``torch.autograd.grad(loss, [env[name] for name in watch])`` works for any of them.
        """
        missing = [n for n in self.input_names if n not in feeds]
        unknown = sorted(set(feeds) - set(self.input_names))
        if missing or unknown:
            raise TypeError(f"inputs: missing {missing}, unknown {unknown} (the model takes {self.input_names})")
        env: dict[str, Any] = {k: torch.as_tensor(v) for k, v in feeds.items()}
        for name in self._where:
            env[name] = _watched(self.tensor(name), name in watch)
        for node in self._nodes:
            try:
                ins = [env[i] if i else None for i in node.inputs]
            except KeyError as exc:
                raise UnsupportedModelError(f"cannot run {node.info.op_type} '{node.info.name}': "
                                            f"no tensor named {exc.args[0]!r} is computed before it") from None
            result = node.fn(ins, node.attrs, node.info)
            results = result if isinstance(result, list) else [result]
            for name, value in zip(node.outputs, results):
                if name:
                    env[name] = _watched(value, name in watch)
        wanted = set(self.output_names) | set(watch)
        return {k: v for k, v in env.items() if k in wanted}


def convert(model: onnx.ModelProto | str | os.PathLike[str], untie: bool = True) -> OnnxModule:
    """An :class:`OnnxModule` for ``model`` (a ModelProto, which is not changed, or a path).

    ``untie``: every ``Identity(initializer)`` output (how the TorchScript exporter shares equal
    weights of different layers) becomes a parameter of its own, named as the Identity's output
    (that is the torch parameter name), so training one layer does not move another; ``to_onnx``
    writes such views as initializers. ``untie=False`` keeps them tied, as the graph is.
    Raises :class:`~spa.errors.UnsupportedModelError` naming every op the table lacks.
    """
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    return OnnxModule(model, untie=untie)


# ---- helpers ---------------------------------------------------------------------------------


def _prepared(model: onnx.ModelProto) -> onnx.ModelProto:
    """Model-local functions inlined (exporters emit them for some layers)."""
    if not model.functions:
        return model
    from onnx import inliner

    return inliner.inline_local_functions(model)


def _check_supported(graph: onnx.GraphProto) -> None:
    bad: dict[str, str] = {}
    for node in graph.node:
        known = node.domain in _DEFAULT_DOMAINS and node.op_type in OPS
        if not known:
            label = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"
            bad.setdefault(label, node.name)
    if bad:
        ops = ", ".join(f"{op} (node '{name}')" for op, name in sorted(bad.items()))
        raise UnsupportedModelError(f"cannot convert to torch: no implementation of op {ops}; "
                                    "spa.model.onnx_torch.SUPPORTED_OPS lists what is supported")


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.type == onnx.AttributeProto.STRING:
            value = value.decode()
        elif a.type == onnx.AttributeProto.STRINGS:
            value = [v.decode() for v in value]
        elif a.type == onnx.AttributeProto.TENSOR:
            value = numpy_helper.to_array(value)
        out[a.name] = value
    return out


def _owner(root: nn.Module, name: str) -> tuple[nn.Module | None, str]:
    """The sub-module (created on demand) that takes tensor ``name`` as its path, and the leaf name."""
    *path, leaf = name.split(".")
    if not leaf or any(not p for p in path):
        return None, ""
    mod = root
    for part in path:
        sub = mod._modules.get(part)
        if sub is None:
            if hasattr(mod, part):
                return None, ""
            sub = nn.Module()
            mod.add_module(part, sub)
        mod = sub
    if hasattr(mod, leaf) or leaf in mod._modules:
        return None, ""
    return mod, leaf


def _watched(value: Any, watch: bool) -> Any:
    if watch and isinstance(value, torch.Tensor) and value.is_floating_point() and not value.requires_grad:
        return value.detach().requires_grad_(True)
    return value


def _views(graph: onnx.GraphProto, stored: Mapping[str, onnx.TensorProto]) -> dict[str, str]:
    """``Identity(initializer)`` outputs -> the initializer (the TorchScript exporter's shared equal values)."""
    outputs = {o.name for o in graph.output}
    return {n.output[0]: n.input[0] for n in graph.node
            if n.op_type == "Identity" and n.input[0] in stored and n.output[0] not in outputs}


def _without_initializers(model: onnx.ModelProto, views: set[str]) -> onnx.ModelProto:
    """``model`` with no initializers and without the Identity nodes of untied views."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.initializer[:]
    keep = [n for n in out.graph.node if not (n.op_type == "Identity" and n.output[0] in views)]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out

