"""What a compensating criterion hands the rewrite: new values for the weights that survive.

Its own module, below :mod:`spa.criteria.base`, so that the criterion interface, the criteria and the
rewrite (:func:`spa.rewrite.apply_plan`) share one type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spa.analysis.consumers import Consumer
from spa.model.graph import ModelContext
from spa.scoring.guarded_refit import KINDS, RefitChoice


@dataclass
class Compensation:
    """New values, in the *original* shapes, for consumer weights and biases."""

    weights: dict[str, np.ndarray] = field(default_factory=dict)
    #: node name -> full-length bias, for consumers whose bias is not an initializer of their own
    new_biases: dict[str, np.ndarray] = field(default_factory=dict)
    #: bias initializer -> full-length values, updated in place
    biases: dict[str, np.ndarray] = field(default_factory=dict)
    #: node name -> how its refit was chosen (sequential compensation), for every consumer considered
    choices: dict[str, RefitChoice] = field(default_factory=dict)
    #: model output -> relative drift of the compensated model from the original on the samples
    #: the refits held out (sequential compensation)
    output_drift: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """Counts of the refit kinds and the held-out output error they left, relative to not
        compensating (the report's ``compensation`` object)."""
        kinds = {k: sum(c.kind == k for c in self.choices.values()) for k in KINDS}
        err = sum(c.error for c in self.choices.values() if c.error == c.error)
        err_none = sum(c.error_none for c in self.choices.values() if c.error_none == c.error_none)
        return {"consumers": len(self.choices), "refitted": kinds["ridge"], "bias_only": kinds["bias"],
                "left_sliced": kinds["none"], "held_out_error_ratio": err / err_none if err_none > 0 else None,
                "held_out_output_drift": dict(self.output_drift),
                "per_consumer": {name: c.to_dict() for name, c in self.choices.items()}}

    def record(self, c: Consumer, ctx: ModelContext, new: np.ndarray, bias_slot: bool) -> np.ndarray | None:
        """Store augmented weights ``new`` for ``c``; returns the bias as written (or None)."""
        self.weights[c.weight] = c.to_weight(ctx, new[:, :-1])
        if not bias_slot:
            return None
        bias = new[:, -1]
        if c.bias is not None and c.own_bias and ctx.array(c.bias).size == bias.size:
            current = ctx.array(c.bias)
            self.biases[c.bias] = bias.astype(current.dtype).reshape(current.shape)
            return self.biases[c.bias]
        self.new_biases[c.node.name] = bias
        return bias
