"""``l2``: a unit's importance is the Euclidean norm of all weights that belong to it."""

from __future__ import annotations

import numpy as np
from spa.criteria.base import Criterion, aggregate_over_params

from spa.analysis.groups import Group
from spa.model.graph import ModelContext


class L2Criterion(Criterion):
    """Scores a unit by the Euclidean norm of all its member weights (filters, BN params, consumer columns).

    Needs no data and scores every group (it is the other criteria's fallback); quantized (QDQ)
    weights count with their dequantized values. Changes no weights.
    """

    name = "l2"

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        return np.sqrt(
            aggregate_over_params(group, ctx, lambda t, axes: np.square(t, dtype=np.float64).sum(axis=axes))
        )
