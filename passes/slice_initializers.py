"""Slice stored tensors (initializers and Constant outputs) along pruned axes.

Rules: for every plan entry ``(tensor, axis, size, keep)``, a tensor whose axis still has the
original ``size`` is replaced by ``take(keep, axis)``; one whose axis already has ``len(keep)``
entries is left alone (so the pass is idempotent). A tensor this pass sliced that has gone since
is done: a later pass gave its readers another tensor (a compensated bias) and CleanupPass
removed it.

Refuses (PassError) a tensor that is missing (and was never sliced), or whose axis has neither
size.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper
from spa.passes.base import Pass, PassError, PassResult

from spa.planning.plan import SliceEntry


def stored_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Every initializer and Constant-node tensor of the main graph, by name."""
    out = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    out[node.output[0]] = a.t
    return out


class SliceInitializersPass(Pass):
    """Slice stored tensors (initializers and Constant outputs) along their pruned axes to the
    kept indices. Leaves alone an axis that already has the kept size; refuses (PassError) a
    tensor that is missing without having been sliced, or whose axis has neither size.
    """

    def __init__(self, slices: list[SliceEntry]) -> None:
        self.by_tensor: dict[str, list[SliceEntry]] = defaultdict(list)
        for s in slices:
            self.by_tensor[s.initializer].append(s)
        self.done: set[str] = set()

    def requires(self, model: onnx.ModelProto) -> None:
        missing = set(self.by_tensor) - set(stored_tensors(model)) - self.done
        if missing:
            raise PassError(f"tensors to slice are not in the model: {sorted(missing)[:5]}")

    def call(self, model: onnx.ModelProto) -> PassResult:
        tensors = stored_tensors(model)
        modified = False
        for name, entries in self.by_tensor.items():
            if name in self.done and name not in tensors:
                continue
            proto = tensors[name]
            dims = [int(d) for d in proto.dims]
            todo = []
            for e in entries:  # sizes are read from dims: a tensor already sliced is not decoded again
                n = dims[e.axis]
                if n == len(e.keep):
                    continue
                if n != e.size:
                    raise PassError(f"'{name}' axis {e.axis} has size {n}, expected {e.size} or {len(e.keep)}")
                dims[e.axis] = len(e.keep)
                todo.append(e)
            if not todo:
                continue
            arr = numpy_helper.to_array(proto)
            for e in todo:
                arr = np.take(arr, np.asarray(e.keep, dtype=np.int64), axis=e.axis)
            proto.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), name))
            del arr  # one tensor at a time: the old data is freed as the new one replaces it
            self.done.add(name)
            modified = True
        return PassResult(model, modified)
