"""``snip``: connection sensitivity (Lee et al., 2019, "SNIP: Single-shot Network Pruning").

The saliency of a weight is ``|w · ∂L/∂w|``, the magnitude of the first-order loss change when
that one weight is removed, with ``∂L/∂w`` the gradient of the mean loss over all the data. A
unit's score sums it over every stored member of the group:

    score(unit) = Σ_{w ∈ unit} |w · g_w|

It needs no training: it is meant for pruning at initialisation, and works on a trained model
as well. Needs labelled data (see :mod:`spa.criteria.gradient`).
"""

from __future__ import annotations

import numpy as np
from spa.criteria.gradient import GradientCriterion, GradientRun, aggregate

from spa.analysis.groups import Group
from spa.model.graph import ModelContext


class SNIPCriterion(GradientCriterion):
    """Scores a unit by ``Σ |w · g_w|`` over its weights (SNIP connection sensitivity).

    Refuses to run without labelled data (``--calib`` with labels or targets) or without torch.
    Changes no weights.
    """

    name = "snip"

    def unit_scores(self, groups: list[Group], ctx: ModelContext, run: GradientRun) -> dict[int, np.ndarray]:
        g = run.gradients()
        saliency = {n: run.weights[n] * g[n] for n in run.names}
        return {grp.id: aggregate(grp, ctx, saliency, absolute=True) for grp in groups}
