"""Write the refitted weights and biases of a compensating criterion (OBSPA).

Rules:
- An initializer listed in ``weights`` or ``biases`` gets the new values while it still has
  its original shape, before SliceInitializersPass slices it. One already updated or sliced is
  left alone.
- A node listed in ``new_biases`` (its bias was missing, computed, or shared) gets a new bias
  initializer as input 2, sliced to the node's surviving output channels.

Running it again changes nothing.
Refuses (PassError) a listed tensor or node that is not in the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper
from spa.passes.base import Pass, PassError, PassResult

from spa.model.graph import Space


class CompensateWeightsPass(Pass):
    """Write a compensating criterion's refitted weights into initializers that still have their
    original shape, and give the listed nodes a new bias sliced to their surviving channels.
    Leaves alone tensors already written or sliced; refuses (PassError) a listed tensor or node
    that is not in the model.
    """

    def __init__(self, values: Mapping[str, np.ndarray], new_biases: Mapping[str, np.ndarray],
                 kept: Mapping[Space, np.ndarray]) -> None:
        self.values = values
        self.new_biases = new_biases
        self.kept = kept

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = model.graph
        inits = {t.name: t for t in g.initializer}
        modified = False
        for name, value in self.values.items():
            if name not in inits:
                raise PassError(f"compensated tensor '{name}' is not an initializer")
            current = numpy_helper.to_array(inits[name])
            if current.shape != value.shape or np.array_equal(current, value):
                continue  # already sliced, or already written
            inits[name].CopyFrom(numpy_helper.from_array(value.astype(current.dtype), name))
            modified = True
        nodes = {n.name: n for n in g.node}
        for node_name, bias in self.new_biases.items():
            node = nodes.get(node_name)
            if node is None:
                raise PassError(f"compensated node '{node_name}' is not in the model")
            name = f"{node_name}__spa_bias"
            if len(node.input) > 2 and node.input[2] == name:
                continue
            keep = self.kept.get((node.output[0], 1))
            values = bias if keep is None else bias[keep]
            dtype = numpy_helper.to_array(inits[node.input[1]]).dtype if node.input[1] in inits else np.float32
            g.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = name
            modified = True
        return PassResult(model, modified)
