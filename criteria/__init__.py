"""Importance criteria, one per module, looked up by name."""

from __future__ import annotations

from spa.criteria.activation import ActivationCriterion
from spa.criteria.base import Criterion, aggregate_over_params
from spa.criteria.bn_scale import BNScaleCriterion
from spa.criteria.crop import CroPCriterion
from spa.criteria.fluctuation import FluctuationCriterion
from spa.criteria.grasp import GraSPCriterion
from spa.criteria.l1 import L1Criterion
from spa.criteria.l2 import L2Criterion
from spa.criteria.obspa import OBSPACriterion
from spa.criteria.random import RandomCriterion
from spa.criteria.snip import SNIPCriterion
from spa.criteria.taylor import TaylorCriterion

from spa.errors import InvalidArgumentError

CRITERIA: dict[str, type[Criterion]] = {
    c.name: c for c in (
        L1Criterion, L2Criterion, BNScaleCriterion, RandomCriterion, OBSPACriterion, FluctuationCriterion,
        ActivationCriterion, TaylorCriterion, SNIPCriterion, GraSPCriterion, CroPCriterion,
    )
}


def get_criterion(name: str, seed: int = 0, **options: object) -> Criterion:
    """An instance of the criterion called ``name``; raises InvalidArgumentError if unknown.

    ``options`` (``stats``, ``calib``) go to criteria that take them (obspa); others ignore them.
    The gradient criteria (``needs_labels``) also take ``labels`` and ``loss``.
    """
    try:
        cls = CRITERIA[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown criterion '{name}'; choose one of: {', '.join(sorted(CRITERIA))}"
        ) from None
    if getattr(cls, "needs_labels", False):
        return cls(seed=seed, **options)  # type: ignore[arg-type]
    if cls in (OBSPACriterion, FluctuationCriterion, ActivationCriterion):
        return cls(seed=seed, **{k: v for k, v in options.items()  # type: ignore[arg-type]
                                 if v is not None and k in ("stats", "calib")})
    return cls(seed=seed)


__all__ = ["CRITERIA", "Criterion", "aggregate_over_params", "get_criterion"]
