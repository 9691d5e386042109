"""The criterion interface: one importance score per unit of a group.

A criterion is a pure function of a group and the model (and, for later criteria, optional
statistics). Higher scores mean *more important*; the lowest-scoring units are removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from spa.graph import ModelContext
from spa.groups import Group


class Criterion:
    """Base class. Subclasses set ``name`` and implement :meth:`score`."""

    name: ClassVar[str] = ""
    #: True when the criterion changes surviving weights (then masked equivalence does not hold).
    compensates: ClassVar[bool] = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        raise NotImplementedError


def aggregate_over_params(
    group: Group, ctx: ModelContext, per_index: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Sum ``per_index(rows)`` over every stored member of ``group``, unit by unit.

    For each member tensor ``t`` sliced on axis ``a``, ``rows`` is ``t`` with axis ``a`` moved to
    the front and the rest flattened (one row per index); ``per_index`` returns one number per
    row. A unit's score is the sum over all its rows in all members — producer filters, norm
    parameters, and the consumer weight columns that read the unit.
    """
    scores = np.zeros(group.n_units, dtype=np.float64)
    for space in group.params(ctx):
        arr = np.asarray(ctx.array(space[0]), dtype=np.float64)
        if arr.ndim == 0:
            continue
        rows = np.moveaxis(arr, space[1], 0).reshape(arr.shape[space[1]], -1)
        np.add.at(scores, group.unit_of[space], per_index(rows))
    return scores
