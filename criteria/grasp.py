"""``grasp``: gradient signal preservation (Wang et al., 2020, "Picking Winning Tickets Before
Training by Preserving Gradient Flow").

Removing weights ``δ = -w`` changes the squared gradient norm ``‖g‖²`` by ``≈ 2 δᵀ H g`` to first
order, with ``H`` the Hessian of the loss. GraSP scores a weight with ``S(-w) = -w ⊙ Hg`` and
removes the weights with the **largest** ``S``: their removal keeps (or even raises) the gradient
flow. SPA removes the *lowest* scores, so a unit scores the negated GraSP score, summed (signed)
over every stored member of the group:

    score(unit) = Σ_{w ∈ unit} w · (H g)_w

``Hg`` comes from double backpropagation (:meth:`GradientRun.hessian_gradient`); ``g`` is the
gradient of the mean loss over all the data. The original also divides the logits by a
temperature (200) for trained models; SPA uses the plain loss. Meant for pruning at
initialisation. Needs labelled data (see :mod:`spa.criteria.gradient`).
"""

from __future__ import annotations

import numpy as np
from spa.criteria.gradient import GradientCriterion, GradientRun, aggregate

from spa.analysis.groups import Group
from spa.model.graph import ModelContext


class GraSPCriterion(GradientCriterion):
    """Scores a unit by the signed ``Σ w · (H g)_w`` over its weights (negated GraSP: the lowest keep
    the gradient flow best when removed).

    Refuses to run without labelled data (``--calib`` with labels or targets) or without torch.
    Changes no weights.
    """

    name = "grasp"

    def unit_scores(self, groups: list[Group], ctx: ModelContext, run: GradientRun) -> dict[int, np.ndarray]:
        hg = run.hessian_gradient(run.gradients())
        saliency = {n: run.weights[n] * hg[n] for n in run.names}
        return {grp.id: aggregate(grp, ctx, saliency) for grp in groups}
