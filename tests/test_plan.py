"""Plan: JSON round trip, replay on the same model, and refusal of plans that do not fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from modelkit import assert_masked_equivalent
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.errors import PlanError
from spa.planning.plan import Plan
from spa.records import Scoring, Selection

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


def _inits(m):
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def test_round_trip_and_format(tmp_path: Path) -> None:
    _, plan, _ = spa.prune(ZOO / "resnet_basic.ts.onnx", ratio=0.4)
    path = tmp_path / "plan.json"
    plan.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "spa-plan/1"
    assert {"model", "criterion", "ratio", "slices", "groups"} <= set(data)
    s0 = data["slices"][0]
    assert set(s0) == {"initializer", "axis", "size", "keep"}
    assert Plan.load(path) == plan


@pytest.mark.parametrize("name", ["resnet_basic.ts.onnx", "densenet_block.dynamo.onnx", "resnext.ts.onnx",
                                  "conv_flatten_linear.dynamo.onnx"])
def test_replay_reproduces_the_model(name: str) -> None:
    original = spa.load_model(ZOO / name)
    first, plan, _ = spa.prune(original, ratio=0.5, criterion="random", scoring=Scoring(seed=3))
    replay, plan2, _ = spa.prune(original, from_plan=plan)
    a, b = _inits(first), _inits(replay)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert plan2.slices == plan.slices
    assert_masked_equivalent(original, replay, plan)


def test_compensated_replay_refits_consumers_of_groups_the_plan_leaves_whole() -> None:
    """``--round-to auto`` leaves small groups whole; their consumers' inputs still change upstream,
    so obspa refits them. The replay must too (it used to skip them: other weights in fc1/fc2)."""
    original = spa.load_model(ZOO / "defaults" / "conv_flatten_linear.ts.onnx")
    first, plan, report = spa.prune(original, ratio=0.4, criterion="obspa", selection=Selection(round_to="auto"))
    assert report.groups_unchanged >= 1 and plan.compensated
    replay = spa.prune(original, from_plan=plan)[0]
    a, b = _inits(first), _inits(replay)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_plan_names_every_shrunk_float_tensor_of_the_input() -> None:
    original = spa.load_model(ZOO / "mobilenetv2.ts.onnx")
    pruned, plan, _ = spa.prune(original, ratio=0.5)
    before, after = _inits(original), _inits(pruned)
    shrunk = {k for k in before if k in after and before[k].shape != after[k].shape}
    assert shrunk == {s.initializer for s in plan.slices}
    for s in plan.slices:
        assert s.keep == sorted(set(s.keep)) and len(s.keep) < s.size


def test_plan_for_another_model_is_refused() -> None:
    _, plan, _ = spa.prune(ZOO / "vgg_bn.ts.onnx", ratio=0.4)
    with pytest.raises(PlanError):
        spa.prune(ZOO / "resnet_basic.ts.onnx", from_plan=plan)


def test_plan_splitting_a_unit_is_refused() -> None:
    _, plan, _ = spa.prune(ZOO / "resnext.ts.onnx", ratio=0.5)
    grouped = spa.analyze(ZOO / "resnext.ts.onnx")
    g = next(g for g in grouped.groups if g.prunable and max(np.bincount(next(iter(g.unit_of.values())))) > 1)
    space = next(s for s in g.params(grouped.ctx))
    bad = Plan(model="x", criterion="l1", ratio=0.5)
    from spa.planning.plan import SliceEntry

    size = grouped.ctx.dim(*space)
    bad.slices = [SliceEntry(space[0], space[1], size, [0])]  # keeps one channel of a multi-channel unit
    with pytest.raises(PlanError, match="part of a coupled unit|does not slice"):
        spa.prune(ZOO / "resnext.ts.onnx", from_plan=bad)
    assert plan.slices


@pytest.mark.parametrize("payload,match", [
    ("not json", "not JSON"),
    ('{"format": "other"}', "not a spa-plan/1"),
    ('{"format": "spa-plan/1", "slices": [{"initializer": "x"}]}', "malformed"),
])
def test_malformed_plan_files(tmp_path: Path, payload: str, match: str) -> None:
    p = tmp_path / "p.json"
    p.write_text(payload)
    with pytest.raises(PlanError, match=match):
        Plan.load(p)


def _shared_computed_bias() -> onnx.ModelProto:
    """T5's pattern (TorchScript export): a bias computed from float Constant nodes (a Where),
    added after two different layers. SPA folds it into a weight and unties its two uses
    (``Where_output_0__spa_use0`` and ``...use1``), which the plan names."""
    rng = np.random.default_rng(0)
    const = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(v, f"{n}_value")) for n, v in (
        ("B", rng.standard_normal(16).astype(np.float32)), ("M", rng.random(16) < 0.9),
        ("Z", np.zeros((), np.float32)))]
    nodes = [*const, helper.make_node("Where", ["M", "B", "Z"], ["Where_output_0"])]
    for k in (1, 2):
        nodes += [helper.make_node("MatMul", [f"x{k}", f"W{k}"], [f"a{k}"]),
                  helper.make_node("Add", [f"a{k}", "Where_output_0"], [f"b{k}"]),
                  helper.make_node("Relu", [f"b{k}"], [f"r{k}"]), helper.make_node("MatMul", [f"r{k}", f"V{k}"],
                                                                                   [f"y{k}"])]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (8, 16)), ("W2", (8, 16)), ("V1", (16, 4)), ("V2", (16, 4)))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [2,
                          8]) for k in (1, 2)],
                          [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, [2, 4]) for k in (1, 2)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def test_plan_naming_a_view_of_a_computed_weight_replays_and_verifies(run_spa: Any, tmp_path: Path) -> None:
    # `spa verify` used to reject SPA's own plan: "plan names 'Where_output_0__spa_use0', which is
    # not a stored tensor of the original model" (its masking folded before lifting the Constants).
    onnx.save(_shared_computed_bias(), str(tmp_path / "m.onnx"))
    res = run_spa("prune", "m.onnx", "--criterion", "l1", "--round-to", "1", "--plan", "p.json", "-o", "s.onnx",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    named = {s["initializer"] for s in json.loads((tmp_path / "p.json").read_text())["slices"]}
    assert {"Where_output_0__spa_use0", "Where_output_0__spa_use1"} <= named
    res = run_spa("verify", "m.onnx", "s.onnx", "--plan", "p.json", cwd=tmp_path)
    assert res.returncode == 0 and "PASSED" in res.stdout, res.stderr
    res = run_spa("prune", "m.onnx", "--from-plan", "p.json", "-o", "again.onnx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert onnx.load(str(tmp_path / "again.onnx")) == onnx.load(str(tmp_path / "s.onnx"))
