"""The criterion interface: one importance score per unit of a group.

A criterion is a pure function of a group and the model (and, for later criteria, optional
statistics). Higher scores mean *more important*; the lowest-scoring units are removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
from spa.criteria.compensation import Compensation

from spa.analysis.groups import Group
from spa.model.graph import ModelContext
from spa.model.quant import dequantized, is_quantization_parameter
from spa.records import KeptUnits


class Criterion:
    """Base class. Subclasses set ``name`` and implement :meth:`score`; their docstrings say what
    they score and what they refuse (data they need, groups they cannot score)."""

    name: ClassVar[str] = ""
    #: True when the criterion changes surviving weights (then masked equivalence does not hold).
    compensates: ClassVar[bool] = False
    #: The keyword options its constructor takes besides ``seed`` (of :meth:`spa.records.Scoring.criterion_options`):
    #: :func:`spa.criteria.get_criterion` passes it these and no others.
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        #: Typical input shapes (:class:`spa.model.sizes.InputSizes`, set by :func:`spa.prune`): the sizes
        #: of synthetic and random inputs a criterion runs the model at (their batch aside).
        self.input_shapes: dict[str, list[int]] | None = None

    def prepare(self, groups: list[Group], ctx: ModelContext) -> None:  # noqa: B027 - optional hook
        """Called once with every prunable group before scoring (e.g. to collect statistics)."""

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        raise NotImplementedError

    def compensate(self, groups: list[Group], kept_units: KeptUnits, ctx: ModelContext) -> Compensation | None:
        """New values for surviving weights (criteria with ``compensates = True``); None: none."""
        return None


def aggregate_over_params(
    group: Group, ctx: ModelContext, per_index: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
) -> np.ndarray:
    """Sum ``per_index(tensor, other_axes)`` over every stored member of ``group``, unit by unit.

    For each member tensor ``t`` sliced on axis ``a``, ``per_index`` reduces ``t`` over every
    axis but ``a`` (``other_axes``) to one number per index. Quantized codes (QDQ) count with
    their dequantized values; their scales and zero points do not count. A unit's score is the sum over all
    its indices in all members — producer filters, norm parameters, and the consumer weight
    columns that read the unit.
    """
    scores = np.zeros(group.n_units, dtype=np.float64)
    for space in group.params(ctx):
        if is_quantization_parameter(ctx, space[0]):
            continue  # a QDQ scale or zero point: the weight it belongs to is scored instead
        arr = ctx.array(space[0])
        if arr.dtype.kind in "iu":  # QDQ codes: score their float values
            value = dequantized(ctx, space[0])
            if value is None:
                continue
            arr = value
        if arr.dtype.kind == "V" and arr.dtype.name.startswith(("bfloat", "float")):
            arr = arr.astype(np.float32)  # bfloat16 / float8 (ml_dtypes): score the values they hold
        if arr.ndim == 0 or arr.dtype.kind != "f":
            continue
        others = tuple(i for i in range(arr.ndim) if i != space[1])
        np.add.at(scores, group.unit_of[space], per_index(arr, others))
    return scores
