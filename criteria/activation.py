"""``activation``: mean absolute activation of a unit's channels, as its readers see them.

For every consumer of the group (a Conv, Gemm or MatMul that reads the channels), ``E|x_j|``
is measured on each input column: from ``--calib`` when given, else from synthetic
``N(0, 1)`` inputs. A unit's score sums them over all its columns and consumers. No weights are
changed, so masked equivalence holds.
"""

from __future__ import annotations

import logging

import numpy as np
from spa.criteria.base import Criterion
from spa.criteria.l2 import L2Criterion
from spa.criteria.obspa import OBSPACriterion

from spa.analysis.consumers import find_consumers
from spa.analysis.groups import Group
from spa.errors import InvalidArgumentError
from spa.model.graph import ModelContext
from spa.scoring.stats import activation_moments

log = logging.getLogger(__name__)


class ActivationCriterion(Criterion):
    """Scores a unit by the mean absolute activation ``E|x_j|`` its readers (Conv, Gemm, MatMul)
    see on its columns, measured on ``--calib`` inputs or, without them, on synthetic ``N(0, 1)`` inputs.

    Refuses ``--stats data`` without ``--calib``. A group with no consumer falls back to ``l2``.
    Changes no weights.
    """

    name = "activation"
    options = ("stats", "calib")

    def __init__(self, seed: int = 0, stats: str = "auto", calib: dict[str, np.ndarray] | None = None,
                 **_: object) -> None:
        super().__init__(seed)
        if stats == "data" and calib is None:
            raise InvalidArgumentError("--stats data needs calibration inputs (--calib)")
        self.calib = calib
        self._scores: dict[int, np.ndarray] = {}

    def prepare(self, groups: list[Group], ctx: ModelContext) -> None:


        consumers = {g.id: find_consumers(g, ctx) for g in groups}
        flat = [c for cs in consumers.values() for c in cs]
        batches = OBSPACriterion(self.seed, "data" if self.calib is not None else "synthetic", self.calib)._batches(ctx)
        moments = activation_moments(flat, ctx, batches, seed=self.seed) if flat else {}
        for g in groups:
            score = np.zeros(g.n_units)
            for c in consumers[g.id]:
                if c.node.name in moments:
                    np.add.at(score, c.col_unit, moments[c.node.name][2])
            self._scores[g.id] = score if consumers[g.id] else L2Criterion(self.seed).score(g, ctx)

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        if group.id not in self._scores:
            self.prepare([group], ctx)
        return self._scores[group.id]
