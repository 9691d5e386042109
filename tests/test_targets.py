"""--target-macs / --target-params: the ratio is found, the estimate is the real cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spa.criteria import get_criterion

import spa
from spa.errors import InvalidArgumentError
from spa.selection import select_units
from spa.targets import estimate

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


@pytest.mark.parametrize("name", ["resnet_bottleneck.ts.onnx", "densenet_block.dynamo.onnx", "resnext.ts.onnx",
                                  "conv_flatten_linear.dynamo.onnx", "mobilenetv2.ts.onnx"])
def test_estimate_equals_the_pruned_model(name: str) -> None:
    a = spa.analyze(ZOO / name)
    crit = get_criterion("l1")
    scores = {g.id: crit.score(g, a.ctx) for g in a.prunable}
    kept = select_units(a.groups, scores, 0.45)
    est = estimate(a.ctx, a.prunable, kept)
    _, _, report = spa.prune(ZOO / name, ratio=0.45)
    assert (est.macs, est.params) == (report.after.macs, report.after.params)


@pytest.mark.parametrize("kind,target", [("macs", 0.5), ("macs", 0.25), ("params", 0.4)])
def test_target_is_met_closely(kind: str, target: float) -> None:
    kw = {f"target_{kind}": target}
    _, plan, report = spa.prune(ZOO / "resnet_bottleneck.ts.onnx", **kw)
    achieved = getattr(report.after, kind) / getattr(report.before, kind)
    assert achieved <= target and achieved > target - 0.1
    assert report.target is not None and np.isclose(report.target["achieved"], achieved)
    assert 0 < plan.ratio < 1


@pytest.mark.parametrize("kw", [{"target_macs": 0.0}, {"target_macs": 1.5}, {"target_macs": 0.5, "target_params": 0.5}])
def test_bad_targets(kw: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        spa.prune(ZOO / "resnet_bottleneck.ts.onnx", **kw)


def test_target_in_the_cli(run_spa, tmp_path: Path) -> None:
    import shutil

    shutil.copy(ZOO / "vgg_bn.ts.onnx", tmp_path / "m.onnx")
    code, out, err = run_spa("prune", tmp_path / "m.onnx", "--target-macs", "0.6", cwd=tmp_path)
    assert code == 0, err
    assert "target: macs <= 60.0%" in out
