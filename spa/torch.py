"""Apply a SPA plan to the PyTorch module the ONNX model was exported from.

    import spa, spa.torch
    pruned_onnx, plan, _ = spa.prune("model.onnx", ratio=0.4)
    spa.torch.apply_plan(module, plan)            # module now has the pruned shapes
    spa.torch.apply_plan(module, plan, weights_from=pruned_onnx)   # compensated (obspa) plans

This needs the plan's tensor names to be the module's parameter and buffer names, which is what
both torch exporters write when nothing renames them: ``torch.onnx.export(..., dynamo=False,
do_constant_folding=False)`` (constant folding fuses Conv+BatchNorm into new, unnamed weights)
or ``torch.onnx.export(..., dynamo=True, optimize=False)`` (the optimizer, on by default, also
folds BatchNorm into Conv).

Only stored tensors and the attributes of standard layers (Conv/ConvTranspose, BatchNorm and
InstanceNorm, Linear, LayerNorm, PReLU, Embedding) are updated. Sizes written in ``forward``
(``torch.split(x, [8, 8])``, ``x.view(-1, 512)``) are code, not state: a plan that changes them
leaves a module that fails at run time, and SPA cannot fix that. ``import spa`` never imports
torch; only ``import spa.torch`` does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.modules.conv import _ConvNd

from spa.errors import PlanError
from spa.model.io import load_model
from spa.planning.plan import Plan, SliceEntry

log = logging.getLogger(__name__)

__all__ = ["apply_plan"]

_NAME_HINT = (
    "the plan's tensor names must be the module's parameter/buffer names; the TorchScript exporter "
    "with do_constant_folding=False (torch.onnx.export(..., dynamo=False, do_constant_folding=False)) "
    "and the dynamo exporter with optimize=False (dynamo=True, optimize=False) keep them; both fold "
    "BatchNorm into Conv otherwise"
)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: A layer that can take a bias the pruned ONNX model adds: any Conv, ConvTranspose or Linear.
_Biasable: TypeAlias = _ConvNd | nn.Linear


@dataclass
class _Tensor:
    """One parameter or buffer of the module, with every (owner, attribute) that holds it."""

    name: str
    value: torch.Tensor
    is_param: bool
    holders: list[tuple[nn.Module, str]] = field(default_factory=list)
    cuts: dict[int, SliceEntry] = field(default_factory=dict)

    def new_shape(self) -> tuple[int, ...]:
        shape = list(self.value.shape)
        for axis, e in self.cuts.items():
            shape[axis] = len(e.keep)
        return tuple(shape)


def apply_plan(
    module: nn.Module,
    plan: Plan,
    *,
    weights_from: onnx.ModelProto | str | os.PathLike[str] | None = None,
    strict: bool = True,
) -> nn.Module:
    """Slice ``module``'s parameters and buffers as ``plan`` says, in place, and return it.

    Every plan entry names a parameter or buffer (``layer1.0.conv1.weight``); it is replaced by
    ``tensor.index_select(axis, keep)``: parameters stay parameters (same ``requires_grad``),
    buffers stay buffers. Layer attributes follow (``out_channels``, ``groups``, ``num_features``,
    ``in_features``, ...). Create optimizers *after* this call: the parameters are new objects.

    ``weights_from`` is the pruned ONNX model (or its path). Every initializer whose name is a
    parameter or buffer of the module is copied into it, and a bias SPA added to a Conv or Gemm
    that had none becomes the layer's ``bias``, so a compensated plan (``obspa``, ``fluctuation``)
    reproduces the pruned model. Without it a compensated plan only slices (a warning says so).

    A plan entry naming no tensor of the module raises :class:`~spa.errors.PlanError`
    (``strict=False``: skipped with a warning). Everything is checked before the module changes:
    on an error it is left as it was.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"apply_plan needs a torch.nn.Module, not {type(module).__name__}")
    tensors = _collect(module)
    entries = _match(plan, tensors, strict)
    for e in entries:
        _check_entry(e, tensors[e.initializer])
    cut = {t.name: t for t in tensors.values() if t.cuts}
    updates = _attribute_updates(module, cut)
    source = _load(weights_from) if weights_from is not None else None
    copies = _weight_copies(source, tensors) if source is not None else {}
    new_biases = _new_biases(source, module, tensors) if source is not None else []
    if plan.compensated and source is None:
        log.warning("the plan is compensated (%s changed surviving weights) but no weights_from was given: "
                    "the module is only sliced and will not match the pruned ONNX model; pass "
                    "weights_from=<pruned model>", plan.criterion)

    with torch.no_grad():
        for t in cut.values():
            new = t.value
            for axis, e in sorted(t.cuts.items()):
                new = new.index_select(axis, torch.as_tensor(e.keep, dtype=torch.long, device=new.device))
            new = new.contiguous()
            if t.is_param:
                new = nn.Parameter(new, requires_grad=t.value.requires_grad)
            for owner, attr in t.holders:
                setattr(owner, attr, new)
            t.value = new
        for owner, values in updates:
            for k, v in values.items():
                setattr(owner, k, v)
        for name, array in copies.items():
            t = tensors[name]
            t.value.copy_(torch.from_numpy(array).to(dtype=t.value.dtype, device=t.value.device))
        for owner, array in new_biases:
            w = owner.weight
            owner.bias = nn.Parameter(torch.from_numpy(array).to(dtype=w.dtype, device=w.device),
                                      requires_grad=w.requires_grad)
    if cut:
        log.info("sliced %d tensors of %s%s", len(cut), type(module).__name__,
                 f"; copied {len(copies)} from the pruned model, added {len(new_biases)} biases" if source else "")
    return module


# ---- collecting and matching ----------------------------------------------------------------

def _collect(module: nn.Module) -> dict[str, _Tensor]:
    """Every parameter and buffer by every name it has (tied tensors share one record)."""
    by_id: dict[int, _Tensor] = {}
    out: dict[str, _Tensor] = {}
    for is_param, items in ((True, module.named_parameters(remove_duplicate=False)),
                            (False, module.named_buffers(remove_duplicate=False))):
        for name, value in items:
            t = by_id.get(id(value))
            if t is None:
                t = by_id[id(value)] = _Tensor(name, value, is_param)
            prefix, _, attr = name.rpartition(".")
            t.holders.append((module.get_submodule(prefix), attr))
            out[name] = t
    return out


def _match(plan: Plan, tensors: dict[str, _Tensor], strict: bool) -> list[SliceEntry]:
    missing = [e.initializer for e in plan.slices if e.initializer not in tensors]
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        msg = f"{len(missing)} of {len(plan.slices)} plan tensors are not parameters or buffers of the module: {shown}"
        hint = _prefix_hint(missing, tensors)
        if strict:
            raise PlanError(f"{msg}. {hint or _NAME_HINT} (strict=False skips them)")
        log.warning("%s; skipped (strict=False). %s", msg, hint or _NAME_HINT)
    return [e for e in plan.slices if e.initializer in tensors]


def _prefix_hint(missing: list[str], tensors: dict[str, _Tensor]) -> str:
    """A hint when the names differ only by a leading prefix (a wrapper module, torch.compile)."""
    name = missing[0]
    for other in tensors:
        if other.endswith("." + name):
            return f"'{name}' is '{other}' here: pass the inner module ({other[: -len(name) - 1]})"
        if name.endswith("." + other):
            return f"'{name}' looks like '{other}' inside a wrapper: pass the module that was exported"
    return ""


def _check_entry(e: SliceEntry, t: _Tensor) -> None:
    shape = tuple(t.value.shape)
    if not 0 <= e.axis < len(shape):
        raise PlanError(f"plan slices axis {e.axis} of '{e.initializer}', which has shape {list(shape)}")
    if shape[e.axis] != e.size:
        raise PlanError(f"plan says '{e.initializer}' axis {e.axis} has size {e.size}; the module's tensor has "
                        f"{shape[e.axis]} (shape {list(shape)}): a different or already pruned module?")
    keep = np.asarray(e.keep, dtype=np.int64)
    if keep.size == 0 or np.any(np.diff(keep) <= 0) or keep[0] < 0 or keep[-1] >= e.size:
        raise PlanError(f"plan keep list for '{e.initializer}' axis {e.axis} is not sorted unique indices in range")
    old = t.cuts.get(e.axis)
    if old is not None and old.keep != e.keep:
        raise PlanError(f"plan slices '{t.name}' axis {e.axis} twice, differently (as '{old.initializer}' "
                        f"and '{e.initializer}', which are the same tensor)")
    t.cuts[e.axis] = e


# ---- layer attributes -----------------------------------------------------------------------

def _attribute_updates(module: nn.Module, cut: dict[str, _Tensor]) -> list[tuple[nn.Module, dict[str, object]]]:
    """The new attributes of every layer that owns a sliced tensor (computed before slicing)."""
    owners: dict[int, tuple[nn.Module, dict[str, _Tensor]]] = {}
    for t in cut.values():
        for owner, attr in t.holders:
            owners.setdefault(id(owner), (owner, {}))[1][attr] = t
    out: list[tuple[nn.Module, dict[str, object]]] = []
    for owner, held in owners.values():
        values = _layer_attributes(owner, held)
        if values:
            out.append((owner, values))
    return out


def _layer_attributes(m: nn.Module, held: dict[str, _Tensor]) -> dict[str, object] | None:
    def shape(attr: str) -> tuple[int, ...] | None:
        t = held.get(attr)
        if t is not None:
            return t.new_shape()
        v = getattr(m, attr, None)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    label = f"{type(m).__name__} holding '{next(iter(held.values())).name}'"
    if isinstance(m, _CONV + _CONV_T):
        w = shape("weight")
        assert w is not None
        groups = _conv_groups(m, held.get("weight"), label)
        if isinstance(m, _CONV_T):
            return {"in_channels": w[0], "out_channels": w[1] * groups, "groups": groups}
        return {"in_channels": w[1] * groups, "out_channels": w[0], "groups": groups}
    if isinstance(m, nn.GroupNorm):
        raise PlanError(f"plan changes the channels of {label}: GroupNorm is not supported (its groups would split)")
    if isinstance(m, nn.modules.batchnorm._NormBase):  # BatchNorm*, InstanceNorm*, SyncBatchNorm
        s = shape("weight") or shape("running_mean")
        return {"num_features": s[0]} if s else None
    if isinstance(m, nn.Linear):
        w = shape("weight")
        assert w is not None
        return {"in_features": w[1], "out_features": w[0]}
    if isinstance(m, nn.LayerNorm):
        s = shape("weight") or shape("bias")
        return {"normalized_shape": tuple(s)} if s else None
    if isinstance(m, nn.PReLU):
        w = shape("weight")
        assert w is not None
        return {"num_parameters": int(np.prod(w))}
    if isinstance(m, nn.Embedding):
        w = shape("weight")
        assert w is not None
        return {"num_embeddings": w[0], "embedding_dim": w[1]}
    if type(m).__module__.startswith("torch.nn."):
        log.warning("%s: sliced, but SPA does not know this layer's attributes; they may be stale", label)
    return None


def _conv_groups(m: _ConvNd, weight: _Tensor | None, label: str) -> int:
    """The number of conv groups left: those that keep channels on the weight's group axis (0)."""
    g = int(m.groups)
    e = weight.cuts.get(0) if weight is not None else None
    if g == 1 or e is None:
        return g
    per = e.size // g
    counts = np.bincount(np.asarray(e.keep) // per, minlength=g)
    left = counts[counts > 0]
    if np.any(left != left[0]):
        raise PlanError(f"plan keeps unequal numbers of channels in the groups of {label} "
                        f"({counts.tolist()}): torch needs equal groups")
    return len(left)


# ---- weights_from ---------------------------------------------------------------------------

def _load(source: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        return source

    return load_model(source)


def _weight_copies(source: onnx.ModelProto, tensors: dict[str, _Tensor]) -> dict[str, np.ndarray]:
    """The pruned model's initializers that are module tensors, shape-checked against the sliced module."""
    out: dict[str, np.ndarray] = {}
    for init in source.graph.initializer:
        t = tensors.get(init.name)
        if t is None:
            continue
        array = numpy_helper.to_array(init)
        if tuple(array.shape) != t.new_shape():
            raise PlanError(f"weights_from: '{init.name}' has shape {list(array.shape)}, the sliced module's "
                            f"tensor {list(t.new_shape())}: pass the ONNX model this plan produced")
        out[init.name] = np.array(array)  # writable, native byte order
    if not out:
        raise PlanError(f"weights_from: no initializer of the ONNX model is a parameter or buffer of the module; {_NAME_HINT}")
    return out


def _new_biases(source: onnx.ModelProto, module: nn.Module,
                tensors: dict[str, _Tensor]) -> list[tuple[_Biasable, np.ndarray]]:
    """Biases the pruned model gives to Conv/Gemm nodes whose torch layer has ``bias=None``."""
    inits = {i.name: i for i in source.graph.initializer}
    out: list[tuple[_Biasable, np.ndarray]] = []
    for node in source.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.input) < 3:
            continue
        w, b = node.input[1], node.input[2]
        if w not in tensors or not b or b in tensors or b not in inits:
            continue
        owner, attr = tensors[w].holders[0]
        if attr != "weight" or not isinstance(owner, _CONV + _CONV_T + (nn.Linear,)) or owner.bias is not None:
            log.warning("weights_from: bias '%s' of node '%s' has no place in the module; not copied", b, node.name)
            continue
        array = np.array(numpy_helper.to_array(inits[b]))
        n = _out_channels(owner, tensors[w])
        if array.shape != (n,):
            log.warning("weights_from: bias '%s' of node '%s' has shape %s, not (%d,); not copied",
                        b, node.name, list(array.shape), n)
            continue
        out.append((owner, array))
    return out


def _out_channels(layer: nn.Module, weight: _Tensor) -> int:
    """Output channels of a Conv, ConvTranspose or Linear once ``weight`` is sliced."""
    s = weight.new_shape()
    if isinstance(layer, _CONV_T):
        return s[1] * _conv_groups(layer, weight, type(layer).__name__)
    return s[0]
