"""Harder CNN patterns (``models/cnn_patterns.py``), both torch exporters, pruned end to end.

Every file prunes with l1 at 0.3 and 0.6, passes the full checker and onnxruntime with its
output shapes unchanged, and equals the original with the removed channels masked (all groups
pruned by default are exact). The groups each pattern is about are pruned (ConvNeXt's MLP hidden
dim, EfficientNet's expansion and SE, Inception's branches, Swin's MLP and heads, the detector's
neck and shared head) and the ones that cannot be pruned exactly are blocked with their reason
(LayerNorm over the channels -> ``--prune-norm-axes``; task outputs; the image input). With
``--prune-norm-axes`` the ConvNeXt and Swin residual streams are pruned and verification
reports drift.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import assert_masked_equivalent, feeds_for, run

import spa
from spa.records import Selection

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo" / "patterns"
FILES = sorted(p.name for p in ZOO.glob("*.onnx"))
NAMES = ("convnext", "detector", "efficientnet", "inception", "swin")


@cache
def _analysis(name: str, norm_axes: bool = False) -> spa.Analysis:
    return spa.analyze(ZOO / name, prune_norm_axes=norm_axes)


def _group(name: str, tensor: str, norm_axes: bool = False):  # noqa: ANN202 - a spa.analysis.groups.Group
    """The group with a member on ``tensor`` (a 1-D parameter or statistic: one group only)."""
    found = [g for g in _analysis(name, norm_axes).groups if any(t == tensor for t, _ in g.members)]
    assert len(found) == 1, (tensor, [g.id for g in found])
    return found[0]


def _kept(plan: spa.Plan, tensor: str, axis: int = 0) -> int | None:
    """How many entries of ``tensor`` survive on ``axis`` (None: not sliced)."""
    return next((len(s.keep) for s in plan.slices if s.initializer == tensor and s.axis == axis), None)


def test_pattern_zoo_is_complete_and_described() -> None:
    assert {f"{n}.{e}.onnx" for n in NAMES for e in ("ts", "dynamo")} == set(FILES)
    manifest = json.loads((ZOO / "MANIFEST.json").read_text())["files"]
    for f in FILES:
        entry = manifest[f]
        assert entry["exporter"] == ("torchscript" if ".ts." in f else "dynamo")
        assert entry["dynamic_batch"] and entry["max_abs_diff"] < 1e-4
        assert (ZOO / f).stat().st_size == entry["file_size"] < 300 * 1024


@pytest.mark.parametrize("ratio", [0.3, 0.6])
@pytest.mark.parametrize("name", FILES)
def test_prunes_and_equals_the_masked_original(name: str, ratio: float) -> None:
    original = spa.load_model(ZOO / name)
    pruned, plan, report = spa.prune(original, ratio=ratio)
    onnx.checker.check_model(pruned, full_check=True)
    assert report.after.macs < report.before.macs and not plan.inexact
    feeds = feeds_for(original)
    assert [r.shape for r in run(pruned, feeds)] == [r.shape for r in run(original, feeds)]
    assert_masked_equivalent(original, pruned, plan)


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_convnext_mlp_pruned_exactly_streams_need_norm_axes(exporter: str) -> None:
    name = f"convnext.{exporter}.onnx"
    for block, hidden in (("stage1.0", 64), ("stage1.1", 64), ("stage2.0", 128)):
        g = _group(name, f"{block}.pwconv1.bias")
        assert g.prunable and g.n_units == hidden and not g.inexact
    for stream in ("stem.1.weight", "head_norm.weight"):  # LayerNorm2d over the residual channels
        g = _group(name, stream)
        assert not g.prunable and g.inexact
        assert any("LayerNormalization" in r and "--prune-norm-axes" in r for r in g.blocked), g.blocked
    _, plan, _ = spa.prune(ZOO / name, ratio=0.5)
    assert _kept(plan, "stage2.0.pwconv1.bias") == 64 and _kept(plan, "stage1.0.gamma") is None


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_convnext_with_norm_axes_prunes_streams_and_reports_drift(exporter: str) -> None:
    name = f"convnext.{exporter}.onnx"
    assert all(_group(name, t, True).prunable for t in ("stem.1.weight", "head_norm.weight"))
    pruned, plan, report = spa.prune(ZOO / name, ratio=0.4, verify_result=True,
                                     selection=Selection(prune_norm_axes=True))
    default = spa.prune(ZOO / name, ratio=0.4)[2]
    assert report.after.macs < default.after.macs
    assert _kept(plan, "stage1.0.gamma") == 10 and _kept(plan, "head_norm.weight") == 20  # layer scale, LN2d
    assert any("LayerNormalization" in m for m in plan.inexact)
    v = report.verification
    assert v is not None and v.passed and v.mode == "drift"
    assert 0 < max(o.max_abs for o in v.outputs)  # pruning the normalised axis moves the outputs


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_efficientnet_expansion_and_se_are_pruned(exporter: str) -> None:
    name = f"efficientnet.{exporter}.onnx"
    expand = _group(name, "blocks.1.block.0.1.running_mean")  # expand 1x1 -> depthwise -> SE gate
    assert expand.prunable and expand.n_units == 64
    assert any(t == "blocks.1.block.2.expand.weight" for t, _ in expand.members)  # the SE gate's output
    assert _group(name, "blocks.1.block.2.reduce.bias").prunable  # SE squeeze width
    residual = _group(name, "blocks.1.block.3.1.running_mean")
    assert residual.prunable and any(t == "blocks.2.block.3.1.running_mean" for t, _ in residual.members)
    assert [g.id for g in _analysis(name).groups if not g.prunable] == [_group(name, "fc.bias").id]  # logits only


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_inception_branches_are_pruned(exporter: str) -> None:
    name = f"inception.{exporter}.onnx"
    concat = _group(name, "mixed1.b1.1.running_mean")  # the four branches share the concat's channels
    assert concat.prunable and concat.n_units == 8 + 12 + 8 + 4
    branches = ("mixed1.b2.1.1.running_mean", "mixed1.b3.1.1.running_mean", "mixed1.b4.1.1.running_mean")
    assert all(any(t == b for t, _ in concat.members) for b in branches)
    for inner in ("mixed1.b2.0.1.running_mean", "mixed2.b3.1.1.running_mean"):  # 1x1 reduce, double 3x3
        assert _group(name, inner).prunable
    _, plan, _ = spa.prune(ZOO / name, ratio=0.6)
    # floor(0.6 * 32) = 19 removed, but every branch keeps at least one channel
    sizes = {"b1": 8, "b2.1": 12, "b3.1": 8, "b4.1": 4}
    per_branch = [_kept(plan, f"mixed1.{b}.1.running_mean") or n for b, n in sizes.items()]  # None: all kept
    assert min(per_branch) >= 1 and 13 <= sum(per_branch) < 32
    for reader in ("mixed2.b1.0.weight", "mixed2.b2.0.0.weight", "mixed2.b3.0.0.weight", "mixed2.b4.1.0.weight"):
        assert _kept(plan, reader, 1) == sum(per_branch)  # every mixed2 branch reads the pruned concat
    assert _kept(plan, "mixed2.b2.0.1.running_mean") == 4


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_swin_mlp_and_heads_prune_stream_needs_norm_axes(exporter: str) -> None:
    name = f"swin.{exporter}.onnx"
    for block, hidden in (("stage1.0", 64), ("stage1.1", 64), ("stage2.0", 128)):
        assert _group(name, f"{block}.mlp.0.bias").prunable and _group(name, f"{block}.mlp.0.bias").n_units == hidden
    heads = _group(name, "stage2.0.attn.qkv.bias")  # a unit is a head: Q, K, V and its bias-table column
    assert heads.prunable and heads.n_units == 4
    assert any(t == "stage2.0.attn.bias_table" for t, _ in heads.members)
    stream = _group(name, "patch.bias")
    assert not stream.prunable and any("--prune-norm-axes" in r for r in stream.blocked)
    _, plan, _ = spa.prune(ZOO / name, ratio=0.5)
    assert _kept(plan, "stage2.0.attn.bias_table", 1) == 2 and _kept(plan, "stage2.0.attn.qkv.weight") == 3 * 16
    pruned, plan, report = spa.prune(ZOO / name, ratio=0.5, verify_result=True,
                                     selection=Selection(prune_norm_axes=True))
    assert _kept(plan, "patch.bias") == 8
    assert report.verification is not None and report.verification.passed


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_detector_neck_and_heads(exporter: str) -> None:
    name = f"detector.{exporter}.onnx"
    fpn = _group(name, "lat3.bias")  # lateral 1x1 + nearest-upsampled P4: one group
    assert fpn.prunable and any(t == "lat4.bias" for t, _ in fpn.members)
    tower = _group(name, "tower.1.running_mean")  # one tower shared by two levels feeds both predictors
    assert tower.prunable and {"cls.weight", "box.weight"} <= {t for t, _ in tower.members}
    assert _group(name, "dec1.1.running_mean").prunable  # UNet decoder after ConvTranspose + skip Concat
    for out in ("cls", "box", "seg"):
        g = _group(name, f"{out}.bias")
        assert any(f"model output '{out}'" in r for r in g.blocked), g.blocked
    skip = _group(name, "up2.bias")  # concatenated with the image itself
    assert any("model input 'input'" in r for r in skip.blocked), skip.blocked
    original = spa.load_model(ZOO / name)
    pruned, plan, _ = spa.prune(original, ratio=0.5)
    assert _kept(plan, "tower.1.running_mean") == 8 and _kept(plan, "cls.weight", 1) == 8
    shapes = [r.shape for r in run(pruned, {"input": np.zeros((3, 3, 32, 32), np.float32)})]
    assert shapes == [(3, 5, 80), (3, 4, 80), (3, 3, 32, 32)]


def test_cli_prunes_and_verifies(run_spa, tmp_path: Path) -> None:  # noqa: ANN001 - conftest fixture
    out = tmp_path / "small.onnx"
    res = run_spa("prune", ZOO / "convnext.dynamo.onnx", "--ratio", "0.5", "--prune-norm-axes", "--verify",
                  "-o", out, "--report", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    assert "verification (drift) REPORTED" in res.stdout and out.exists()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verification"]["mode"] == "drift"
    res = run_spa("prune", ZOO / "detector.ts.onnx", "--ratio", "0.4", "--verify", "-o", tmp_path / "d.onnx",
                  "--criterion", "l1")
    assert res.returncode == 0 and "verification (masked-equivalence) PASSED" in res.stdout, res.stderr
