"""GroupNorm as the torch exporters write it: ``Reshape(x, [0, G, -1])``, InstanceNormalization
over each group, ``Reshape`` back to ``Shape(x)``, then the per-channel affine. A unit is one
whole group, so the groups that stay keep their statistics and pruning is exact."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from modelkit import conv, group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa

C, G = 8, 4


def _group_norm(groups: int) -> onnx.ModelProto:
    inits: dict = {"split": np.array([0, groups, -1], np.int64), "ones": np.ones(groups, np.float32),
                   "zeros": np.zeros(groups, np.float32), "gamma": w(C, 1, 1, seed=1), "beta": w(C, 1, 1, seed=2)}
    nodes = [conv("x", "a", 3, C, inits=inits),
             helper.make_node("Reshape", ["a", "split"], ["g"], name="to_groups"),
             helper.make_node("InstanceNormalization", ["g", "ones", "zeros"], ["gn"]),
             helper.make_node("Shape", ["a"], ["a_shape"]),
             helper.make_node("Reshape", ["gn", "a_shape"], ["n"], name="from_groups"),
             helper.make_node("Mul", ["n", "gamma"], ["s"]), helper.make_node("Add", ["s", "beta"], ["b"]),
             helper.make_node("Relu", ["b"], ["r"]), conv("r", "y", C, 2, inits=inits)]
    return model(nodes, {"x": ["N", 3, 5, 5]}, {"y": ["N", 2, 5, 5]}, inits)


def test_group_norm_prunes_whole_groups_exactly() -> None:
    g = group_of(spa.analyze(_group_norm(G)), "a.w", 0)
    assert g.prunable and g.n_units == G and not g.inexact
    pruned, _, report = prune_checked(_group_norm(G), 0.5)  # masked equivalence included
    assert report.groups_pruned == 1
    assert init_shape(pruned, "a.w") == [C // 2, 3, 3, 3] and init_shape(pruned, "ones") == [G // 2]
    target = next(n.input[1] for n in pruned.graph.node if n.name == "to_groups")
    value = next(onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer if t.name == target)
    assert value.tolist() == [0, G // 2, -1]


def test_one_group_normalises_over_every_channel_and_stays_blocked() -> None:
    g = group_of(spa.analyze(_group_norm(1)), "a.w", 0)
    assert not g.prunable and any(r.startswith("InstanceNormalization") and "'g'" in r for r in g.blocked)


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_torch_group_norm(tmp_path, exporter: str) -> None:  # noqa: ANN001
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, C, 3, padding=1), torch.nn.GroupNorm(G, C), torch.nn.ReLU(),
                              torch.nn.Conv2d(C, 2, 3, padding=1)).eval()
    with torch.no_grad():
        net[1].weight.normal_()
        net[1].bias.normal_()
    path = tmp_path / f"gn.{exporter}.onnx"
    x = torch.randn(1, 3, 5, 5)
    if exporter == "ts":
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, do_constant_folding=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    else:
        torch.onnx.export(net, (x,), str(path), dynamo=True, optimize=False, external_data=False, verbose=False,
                          input_names=["x"], output_names=["y"])
    pruned, _, report = prune_checked(onnx.load(str(path)), 0.5)
    assert report.groups_pruned == 1
    assert [init_shape(pruned, n.input[1])[:2] for n in pruned.graph.node if n.op_type == "Conv"] == [[4, 3], [2, 4]]
