"""``bn-scale``: |gamma| of the BatchNorms in the group (network slimming).

A unit's score is the sum of |gamma| over every BatchNormalization whose channels are in the
group (a residual stream has several). A group with no BatchNorm (a classifier's hidden layer)
falls back to ``l2``, and the fallback is logged.
"""

from __future__ import annotations

import logging

import numpy as np
from spa.criteria.base import Criterion
from spa.criteria.l2 import L2Criterion

from spa.analysis.groups import Group
from spa.model.graph import ModelContext

log = logging.getLogger(__name__)


class BNScaleCriterion(Criterion):
    """Scores a unit by ``|gamma|`` of the BatchNormalizations on its channels (network slimming).

    Needs no data. A group with no BatchNorm cannot be scored this way and falls back to ``l2``
    (logged). Changes no weights.
    """

    name = "bn-scale"

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        scores = np.zeros(group.n_units, dtype=np.float64)
        found = False
        members = set(group.members)
        for t, a in group.members:
            for node in ctx.consumers.get(t, ()):
                if node.op_type != "BatchNormalization" or node.input[0] != t or a != 1:
                    continue
                gamma = node.input[1]
                if (gamma, 0) in members and ctx.is_stored(gamma):
                    np.add.at(scores, group.unit_of[(gamma, 0)], np.abs(ctx.array(gamma)).astype(np.float64))
                    found = True
        if not found:
            log.debug("group %d has no BatchNorm; bn-scale falls back to l2", group.id)
            return L2Criterion(self.seed).score(group, ctx)
        return scores
