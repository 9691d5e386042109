"""Property: pruning any channel subset of any groups equals masking that subset (hypothesis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelkit import assert_masked_equivalent

import spa
from spa.planning.plan import kept_spaces, make_plan
from spa.rewrite import apply_plan, check_valid

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"
NAMES = ["resnet_bottleneck.ts.onnx", "densenet_block.dynamo.onnx", "resnext.dynamo.onnx", "se_block.ts.onnx",
         "conv_flatten_linear.ts.onnx", "misc_ops.ts.onnx", "mobilenetv2.dynamo.onnx"]
_ORIGINALS = {n: spa.load_model(ZOO / n) for n in NAMES}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), data=st.data())
def test_random_subsets_are_masked_equivalent(name: str, data: st.DataObject) -> None:
    original = _ORIGINALS[name]
    a = spa.analyze(original)
    chosen = data.draw(st.lists(st.sampled_from(a.prunable), min_size=1, unique_by=lambda g: g.id))
    kept_units = {}
    for g in chosen:
        keep = data.draw(st.lists(st.integers(0, g.n_units - 1), min_size=1, max_size=g.n_units, unique=True))
        kept_units[g.id] = np.array(sorted(keep))
    # Every member must keep an index; the selector guarantees it, here we draw until it holds.
    for g in chosen:
        for units in g.unit_of.values():
            if not np.isin(units, kept_units[g.id]).any():
                kept_units[g.id] = np.union1d(kept_units[g.id], [units[0]])
    plan = make_plan(name, "property", 0.0, a.groups, kept_units, a.ctx)
    pruned = apply_plan(a.model, a.ctx, plan, kept_spaces(a.groups, kept_units))
    check_valid(pruned, original)
    onnx.checker.check_model(pruned, full_check=True)
    assert_masked_equivalent(original, pruned, plan)
