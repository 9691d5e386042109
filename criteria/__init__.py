"""Importance criteria, one per module, looked up by name.

The registry is built from this package: every module in it is imported and each
:class:`~spa.criteria.base.Criterion` subclass that sets ``name`` is registered under that name. A new
criterion is a new module; nothing here lists them. Each class declares the options it takes
(``options``); :func:`get_criterion` passes it those and no others.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from spa.criteria.base import Criterion, aggregate_over_params

from spa.errors import InvalidArgumentError


def _discover() -> dict[str, type[Criterion]]:
    """Name -> class of every named criterion defined in a module of this package."""
    found: dict[str, type[Criterion]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if not (isinstance(obj, type) and issubclass(obj, Criterion) and obj.__module__ == module.__name__):
                continue
            if not obj.name:
                continue  # a base class (GradientCriterion)
            if obj.name in found:
                raise ImportError(f"criterion '{obj.name}' is defined twice: {found[obj.name]} and {obj}")
            found[obj.name] = obj
    return found


CRITERIA: dict[str, type[Criterion]] = _discover()


def get_criterion(name: str, seed: int = 0, **options: object) -> Criterion:
    """An instance of the criterion called ``name``; raises InvalidArgumentError if unknown.

    Of ``options`` (``stats``, ``calib``, ``labels``, ``loss``: see :class:`spa.records.Scoring`), the
    criterion gets those its class declares in ``options`` and that are not None; it ignores the rest.
    """
    try:
        cls = CRITERIA[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown criterion '{name}'; choose one of: {', '.join(sorted(CRITERIA))}"
        ) from None
    declared: dict[str, Any] = {k: v for k, v in options.items() if k in cls.options and v is not None}
    return cls(seed=seed, **declared)


__all__ = ["CRITERIA", "Criterion", "aggregate_over_params", "get_criterion"]
