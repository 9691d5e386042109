"""``crop``: gradient-norm preservation with magnitudes (CroP; Rachwan et al., 2022, "Winning the
Lottery Ahead of Time: Efficient Early Network Pruning").

Like GraSP it looks at how removing a weight changes the gradient flow, ``w ⊙ Hg``, but it keeps
the weights whose removal would change it the most **in either direction**, i.e. the largest
``|w ⊙ Hg|``. A unit's score sums that over every stored member of the group:

    score(unit) = Σ_{w ∈ unit} |w · (H g)_w|

``Hg`` comes from double backpropagation; ``g`` is the gradient of the mean loss over all the
data. Meant for pruning at initialisation (the structured form is CroP-S). Needs labelled data
(see :mod:`spa.criteria.gradient`).
"""

from __future__ import annotations

import numpy as np
from spa.criteria.gradient import GradientCriterion, GradientRun, aggregate

from spa.analysis.groups import Group
from spa.model.graph import ModelContext


class CroPCriterion(GradientCriterion):
    """Scores a unit by ``Σ |w · (H g)_w|`` over its weights (CroP: gradient-flow change either way).

    Refuses to run without labelled data (``--calib`` with labels or targets) or without torch.
    Changes no weights.
    """

    name = "crop"

    def unit_scores(self, groups: list[Group], ctx: ModelContext, run: GradientRun) -> dict[int, np.ndarray]:
        hg = run.hessian_gradient(run.gradients())
        saliency = {n: run.weights[n] * hg[n] for n in run.names}
        return {grp.id: aggregate(grp, ctx, saliency, absolute=True) for grp in groups}
