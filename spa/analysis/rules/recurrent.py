"""Recurrent layers: LSTM, GRU and RNN, pruned by hidden units.

A hidden unit ``h`` owns row ``g·H + h`` of every gate ``g`` in ``W`` and ``R`` (axis 1), entry
``g·H + h`` of every half of ``B`` and of the peepholes ``P``, column ``h`` of ``R`` (axis 2, the
recurrent input), and axis ``H`` of ``Y``, ``Y_h``, ``Y_c``, ``initial_h`` and ``initial_c``. All of
them are one unit: removing it removes the unit from both directions of a bidirectional layer.
The input features (``X`` axis 2) are consumed by ``W`` axis 2, like a dense layer's input.

Masked equivalence holds because a hidden unit whose weights, bias and initial state are zero
stays zero: its gates see a pre-activation of 0, the candidate ``g(0) = 0`` (tanh), so the cell
and hidden state never leave 0 and the other units read nothing from it. That needs the
candidate and output activations to map 0 to 0: layers with other ``activations`` (Sigmoid,
HardSigmoid, Affine, Softplus as ``g`` or ``h``) are blocked with the reason. So are weights
computed at run time, and ``layout`` values other than 0 and 1.

The ``hidden_size`` attribute is rewritten to the number of surviving units.
"""

from __future__ import annotations

import numpy as np
import onnx

from spa.analysis.rules.base import Coupling, KeptMap, Rule, dim_or_block, register
from spa.model.graph import ModelContext, Space, attr_int, attr_strs, node_label

#: Activations ``f`` with ``f(0) = 0``: a zeroed unit stays zero through them.
ZERO_PRESERVING = frozenset({"Tanh", "Relu", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "Elu", "Softsign"})

#: Op type -> (gates, default activations, positions in ``activations`` that must map 0 to 0).
SPECS: dict[str, tuple[int, tuple[str, ...], tuple[int, ...]]] = {
    "LSTM": (4, ("Sigmoid", "Tanh", "Tanh"), (1, 2)),
    "GRU": (3, ("Sigmoid", "Tanh"), (1,)),
    "RNN": (1, ("Tanh",), (0,)),
}


def _opt(names: list[str] | tuple[str, ...], i: int) -> str | None:
    return names[i] if len(names) > i and names[i] else None


@register
class RecurrentRule(Rule):
    """LSTM / GRU / RNN: ``X, W, R, B, sequence_lens, initial_h[, initial_c, P]`` ->
    ``Y, Y_h[, Y_c]``."""

    op_types = ("LSTM", "GRU", "RNN")

    def seeds(self, node: onnx.NodeProto, ctx: ModelContext) -> list[Space]:
        return [(node.input[2], 2)]  # R's columns: the hidden units

    def _hidden(self, node: onnx.NodeProto) -> tuple[list[tuple[Space, int]], list[Space]]:
        """The spaces indexed by gate-major hidden rows ``(space, copies)`` and those indexed by
        hidden units themselves."""
        ins, outs = list(node.input), list(node.output)
        gates = SPECS[node.op_type][0]
        rows: list[tuple[Space, int]] = [((ins[1], 1), gates), ((ins[2], 1), gates)]
        if _opt(ins, 3):
            rows.append(((ins[3], 1), 2 * gates))
        if node.op_type == "LSTM" and _opt(ins, 7):
            rows.append(((ins[7], 1), 3))
        units: list[Space] = [(ins[2], 2)]
        units += [(t, 2) for t in (_opt(ins, 5), _opt(ins, 6) if node.op_type == "LSTM" else None) if t]
        if _opt(outs, 0):
            units.append((outs[0], 3))
        units += [(t, 2) for t in (_opt(outs, 1), _opt(outs, 2)) if t]
        return rows, units

    def _refusal(self, node: onnx.NodeProto, ctx: ModelContext) -> str | None:
        layout = attr_int(node, "layout", 0)
        if layout not in (0, 1):
            return f"{node_label(node)} has layout={layout}"
        for t in node.input[1:4]:
            if t and not ctx.is_constant(t):
                return f"{node_label(node)} weight '{t}' is not a constant"
        _, defaults, must_keep_zero = SPECS[node.op_type]
        names = attr_strs(node, "activations") or []
        per_dir = len(defaults)
        for k, name in enumerate(names):
            if k % per_dir in must_keep_zero and name not in ZERO_PRESERVING:
                return (f"{node_label(node)} uses activation {name}, which does not map 0 to 0 "
                        "(a removed hidden unit would not stay zero)")
        return None

    def couple(self, node: onnx.NodeProto, ctx: ModelContext, space: Space) -> Coupling:
        c = Coupling()
        x, w = node.input[0], node.input[1]
        inputs: list[Space] = [(x, 2), (w, 2)]
        rows, units = self._hidden(node)
        if space not in inputs and space not in units and space not in [s for s, _ in rows]:
            return c.block(space, f"{node_label(node)} cannot prune axis {space[1]} of '{space[0]}' "
                                  "(sequence, batch or direction axis)")
        why = self._refusal(node, ctx)
        if why is not None:
            return c.block(space, why)
        if space in inputs:
            n = dim_or_block(ctx, c, (w, 2), node, space)
            return c if n is None else c.same(inputs[0], inputs[1], n)
        hidden = dim_or_block(ctx, c, units[0], node, space)
        if hidden is None:
            return c
        for s in units[1:]:
            c.same(units[0], s, hidden)
        h = np.arange(hidden, dtype=np.int64)
        for s, copies in rows:
            if ctx.dim(*s) != copies * hidden:
                return c.block(space, f"{node_label(node)}: '{s[0]}' axis {s[1]} has {ctx.dim(*s)} entries, "
                                      f"not {copies} x hidden_size {hidden}")
            c.link(units[0], s, np.tile(h, copies), np.arange(copies * hidden, dtype=np.int64))
        return c

    def update_attributes(self, node: onnx.NodeProto, ctx: ModelContext, kept: KeptMap) -> bool:
        """Set ``hidden_size`` to the surviving hidden units."""
        space = (node.input[2], 2)
        if space not in kept:
            return False
        n = len(kept[space])
        for a in node.attribute:
            if a.name == "hidden_size" and a.i != n:
                a.i = n
                return True
        return False
