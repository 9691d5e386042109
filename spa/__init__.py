"""SPA — Structurally Prune Anything: structured pruning of ONNX models.

``import spa`` stays light: it needs onnx, numpy and networkx, never torch.
"""

from __future__ import annotations

from spa.errors import RewriteError, SpaError
from spa.model.io import load_model, save_model
from spa.pipeline.api import Analysis, PruneResult, analyze, prune, verify_models
from spa.planning.plan import Plan
from spa.records import Bench, Runtime, Scoring, Selection, Target
from spa.version import __version__

__all__ = [
    "Analysis",
    "Bench",
    "Plan",
    "PruneResult",
    "RewriteError",
    "Runtime",
    "Scoring",
    "Selection",
    "SpaError",
    "Target",
    "__version__",
    "analyze",
    "load_model",
    "prune",
    "save_model",
    "verify_models",
]
