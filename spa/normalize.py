"""Normalisation of SPA's working copy of a model, before it is indexed and coupled.

Exporters store the same thing in different ways. Each step here rewrites one of those ways into
the form the coupling rules, criteria and rewrite passes expect, without changing what the model
computes. The caller's model is never touched: :func:`normalize` runs on the working copy (and on
the copy :func:`spa.verify.mask_model` masks, so a plan names the same tensors in both).
"""

from __future__ import annotations

import logging

import onnx

log = logging.getLogger(__name__)


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``model`` in place (see the module docstring) and return it. Deterministic."""
    from spa.passes.fold_identity_gather import FoldIdentityGatherPass
    from spa.passes.lift_constants import LiftConstantsPass

    if LiftConstantsPass()(model).modified:
        log.debug("lifted float Constant nodes into initializers")
    if FoldIdentityGatherPass()(model).modified:
        log.debug("replaced gathers that copy a flattened tensor in order (dynamo as_strided) by Identity")
    return model
