"""``random``: uniform random scores, seeded per group (a baseline)."""

from __future__ import annotations

import numpy as np
from spa.criteria.base import Criterion

from spa.analysis.groups import Group
from spa.model.graph import ModelContext


class RandomCriterion(Criterion):
    """Same seed and model give the same choice; each group draws from its own stream."""

    name = "random"

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        rng = np.random.default_rng([self.seed, group.id])
        return rng.random(group.n_units)
