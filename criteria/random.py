"""``random``: uniform random scores, seeded per group (a baseline)."""

from __future__ import annotations

import numpy as np
from spa.criteria.base import Criterion

from spa.analysis.groups import Group
from spa.model.graph import ModelContext


class RandomCriterion(Criterion):
    """Scores units uniformly at random (a baseline); same seed and model give the same choice, each
    group drawing from its own stream.

    Needs no data and scores every group. Changes no weights.
    """

    name = "random"

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        rng = np.random.default_rng([self.seed, group.id])
        return rng.random(group.n_units)
