"""Every committed zoo model x every magnitude criterion (each at 0.2 or 0.5).

Checks: full ONNX check, onnxruntime run, output shapes unchanged, params reduced, masked
equivalence on seeded random inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import assert_masked_equivalent, feeds_for, run

import spa
from spa.records import Scoring

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"
MODELS = sorted(p.name for p in ZOO.glob("*.onnx"))



def test_zoo_is_complete() -> None:
    names = {m.split(".")[0] for m in MODELS}
    assert {"vgg_bn", "resnet_basic", "resnet_bottleneck", "resnext", "mobilenetv2", "densenet_block",
            "se_block", "conv_flatten_linear"} <= names
    for n in names:
        assert f"{n}.ts.onnx" in MODELS and f"{n}.dynamo.onnx" in MODELS


# Each criterion at one ratio: l1 also runs at 0.3 and 0.6 on every zoo file in
# tests/test_coverage.py, and the rewrite does not depend on which criterion chose the units.
@pytest.mark.parametrize(("criterion", "ratio"), [("l1", 0.2), ("l2", 0.5), ("random", 0.2), ("bn-scale", 0.5)])
@pytest.mark.parametrize("name", MODELS)
def test_prune_zoo(name: str, criterion: str, ratio: float) -> None:
    original = spa.load_model(ZOO / name)
    pruned, plan, report = spa.prune(original, ratio=ratio, criterion=criterion)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = feeds_for(original)
    ref, got = run(original, feeds), run(pruned, feeds)
    assert [r.shape for r in ref] == [g.shape for g in got]
    assert report.groups_pruned >= 1
    assert report.after.params < report.before.params
    assert report.after.macs < report.before.macs
    assert plan.slices and all(0 < len(s.keep) < s.size for s in plan.slices)
    assert_masked_equivalent(original, pruned, plan)


@pytest.mark.parametrize("name", MODELS)
def test_zoo_blocked_groups_have_reasons(name: str) -> None:
    a = spa.analyze(ZOO / name)
    blocked = [g for g in a.groups if g.blocked]
    # The classifier output is always blocked: it is the model's interface.
    assert any("model output" in r for g in blocked for r in g.blocked)
    for g in blocked:
        assert all(r.strip() for r in g.blocked)
    # Only the classifier output stays blocked in our zoo: every other pattern has a rule.
    assert len(blocked) == 1, [g.blocked for g in blocked]
    assert a.prunable, "every zoo model has prunable groups"


@pytest.mark.parametrize("name", ["resnet_basic.ts.onnx", "mobilenetv2.dynamo.onnx", "densenet_block.ts.onnx"])
def test_ratio_zero_is_equivalent(name: str) -> None:
    original = spa.load_model(ZOO / name)
    pruned, plan, report = spa.prune(original, ratio=0.0)
    assert plan.slices == []
    assert report.after.params == report.before.params
    feeds = feeds_for(original)
    for r, g in zip(run(original, feeds), run(pruned, feeds)):
        np.testing.assert_array_equal(r, g)


def test_grouped_conv_keeps_whole_groups() -> None:
    original = spa.load_model(ZOO / "resnext.ts.onnx")
    pruned, plan, _ = spa.prune(original, ratio=0.5)
    groups_by_node = {n.name: n for n in pruned.graph.node if n.op_type == "Conv"}
    inits = {t.name: t for t in pruned.graph.initializer}
    seen_grouped = 0
    for node in groups_by_node.values():
        g = next((a.i for a in node.attribute if a.name == "group"), 1)
        if g > 1:
            seen_grouped += 1
            wshape = list(inits[node.input[1]].dims)
            assert wshape[0] % g == 0
    assert seen_grouped >= 1
    original_groups = [a.i for n in original.graph.node for a in n.attribute if a.name == "group" and a.i > 1]
    pruned_groups = [a.i for n in pruned.graph.node for a in n.attribute if a.name == "group" and a.i > 1]
    assert sum(pruned_groups) < sum(original_groups)


def test_depthwise_stays_depthwise() -> None:
    pruned, _, _ = spa.prune(spa.load_model(ZOO / "mobilenetv2.ts.onnx"), ratio=0.5)
    inits = {t.name: t for t in pruned.graph.initializer}
    dw = 0
    for n in pruned.graph.node:
        g = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and g > 1:
            dims = list(inits[n.input[1]].dims)
            assert dims[0] == g and dims[1] == 1
            dw += 1
    assert dw >= 2


@pytest.mark.parametrize("stem", sorted({m.split(".")[0] for m in MODELS}))
def test_both_exporters_prune_alike(stem: str) -> None:
    """The same module exported two ways loses the same MACs."""
    ts = spa.prune(ZOO / f"{stem}.ts.onnx", ratio=0.5)[2]
    dyn = spa.prune(ZOO / f"{stem}.dynamo.onnx", ratio=0.5)[2]
    assert ts.before.macs == dyn.before.macs
    assert ts.after.macs == dyn.after.macs
    assert ts.groups_pruned == dyn.groups_pruned


# The default statistics (synthetic) run on every zoo file in tests/criteria/test_obspa.py and, on
# the exporters' default exports, in docs/coverage.md (tests/test_coverage.py); moments on a few.
@pytest.mark.parametrize("name,stats", [(m, "moments") for m in (
    "resnet_basic.ts.onnx", "mobilenetv2.dynamo.onnx", "densenet_block.ts.onnx", "misc_ops.dynamo.onnx",
    "se_block.ts.onnx")])
def test_obspa_prunes_every_zoo_model(name: str, stats: str) -> None:
    original = spa.load_model(ZOO / name)
    pruned, plan, report = spa.prune(original, ratio=0.4, criterion="obspa", verify_result=True,
                                     scoring=Scoring(stats=stats))
    onnx.checker.check_model(pruned, full_check=True)
    assert plan.compensated and report.after.params < report.before.params
    v = report.verification
    assert v is not None and v.mode == "drift"
    assert all(np.isfinite(o.max_abs) for o in v.outputs)
