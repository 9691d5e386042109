"""Graph-surgery passes, one per module (installed as ``spa.passes``)."""

from __future__ import annotations

from spa.passes.base import Pass, PassError, PassManager, PassResult
from spa.passes.cleanup import CleanupPass
from spa.passes.compensate_weights import CompensateWeightsPass
from spa.passes.drop_value_info import DropValueInfoPass
from spa.passes.materialize_views import MaterializeViewsPass
from spa.passes.rewrite_shape_constants import RewriteShapeConstantsPass
from spa.passes.slice_initializers import SliceInitializersPass
from spa.passes.update_attributes import UpdateAttributesPass

__all__ = [
    "CleanupPass",
    "CompensateWeightsPass",
    "DropValueInfoPass",
    "MaterializeViewsPass",
    "Pass",
    "PassError",
    "PassManager",
    "PassResult",
    "RewriteShapeConstantsPass",
    "SliceInitializersPass",
    "UpdateAttributesPass",
]
