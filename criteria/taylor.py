"""``taylor``: first-order Taylor estimate of the loss change when a unit is removed.

Removing a unit sets all its weights ``w`` to zero; to first order the loss changes by
``ΔL ≈ -Σ_{w ∈ unit} w · ∂L/∂w`` (the sum runs over every stored member of the group, as for
``l1``). Near a trained minimum the full-data gradient is close to zero, so, as in Molchanov et
al. (2019, "Importance Estimation for Neural Network Pruning"), the estimate is taken per
mini-batch ``b`` and squared before averaging:

    score(unit) = Σ_b s_b · ( Σ_{w ∈ unit} w · ∂L_b/∂w )²

with ``s_b`` the batch's share of the samples. Units whose removal would move the loss least
score lowest and are removed first. Needs labelled data (see :mod:`spa.criteria.gradient`).
"""

from __future__ import annotations

import numpy as np
from spa.criteria.gradient import GradientCriterion, GradientRun, aggregate

from spa.analysis.groups import Group
from spa.model.graph import ModelContext


class TaylorCriterion(GradientCriterion):
    """Scores a unit by the per-mini-batch squared first-order loss change ``(Σ w · ∂L_b/∂w)²``,
    averaged over batches (Molchanov et al.).

    Refuses to run without labelled data (``--calib`` with labels or targets) or without torch.
    Changes no weights.
    """

    name = "taylor"

    def unit_scores(self, groups: list[Group], ctx: ModelContext, run: GradientRun) -> dict[int, np.ndarray]:
        scores = {g.id: np.zeros(g.n_units) for g in groups}
        for share, grads in run.batch_gradients():
            contribution = {n: run.weights[n] * grads[n] for n in run.names}
            for g in groups:
                scores[g.id] += share * np.square(aggregate(g, ctx, contribution))
        return scores
