"""``l1``: a unit's importance is the sum of |w| over every weight that belongs to it."""

from __future__ import annotations

import numpy as np
from spa.criteria.base import Criterion, aggregate_over_params

from spa.analysis.groups import Group
from spa.model.graph import ModelContext


class L1Criterion(Criterion):
    """Scores a unit by the sum of ``|w|`` over all its member weights (filters, BN params, consumer columns).

    Needs no data and scores every group; quantized (QDQ) weights count with their dequantized
    values, their scales and zero points not at all. Changes no weights.
    """

    name = "l1"

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        return aggregate_over_params(group, ctx, lambda t, axes: np.abs(t).sum(axis=axes, dtype=np.float64))
