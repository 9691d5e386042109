"""The registry of per-op coupling rules; importing this package registers every rule."""

from __future__ import annotations

from spa.analysis.rules import (  # noqa: F401,E501  (registration)
    constants,
    contrib,
    conv,
    dense,
    einsum,
    elementwise,
    indexing,
    join_split,
    layout,
    norm,
    pooling,
    quant,
    recurrent,
    reshape,
    sequence,
    shape_reads,
)
from spa.analysis.rules.base import (
    Block,
    Coupling,
    Edge,
    KeptMap,
    RewriteSink,
    Rule,
    register,
    registered_op_types,
    rule_for,
)

__all__ = [
    "Block",
    "Coupling",
    "Edge",
    "KeptMap",
    "RewriteSink",
    "Rule",
    "register",
    "registered_op_types",
    "rule_for",
]
