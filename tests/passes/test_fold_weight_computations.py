"""FoldWeightComputationsPass: weights computed from other weights (weight standardisation, a bias
with a zeroed slice) become initializers, so the layers that use them prune exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from modelkit import group_of, init_shape, model, prune_checked, run, w
from onnx import helper

import spa
from spa.passes.fold_weight_computations import FoldWeightComputationsPass

C0, C1, C2 = 3, 6, 4


def _standardised(raw: str, out: str, nodes: list, inits: dict) -> None:
    """``out = (raw - mean) / sqrt(var + eps)`` over each output channel's ``I·k·k`` weights."""
    inits[f"{out}.eps"] = np.array(1e-5, np.float32)
    nodes += [helper.make_node("ReduceMean", [raw], [f"{out}.mu"], axes=[1, 2, 3], keepdims=1),
              helper.make_node("Sub", [raw, f"{out}.mu"], [f"{out}.d"]),
              helper.make_node("Mul", [f"{out}.d", f"{out}.d"], [f"{out}.d2"]),
              helper.make_node("ReduceMean", [f"{out}.d2"], [f"{out}.var"], axes=[1, 2, 3], keepdims=1),
              helper.make_node("Add", [f"{out}.var", f"{out}.eps"], [f"{out}.ve"]),
              helper.make_node("Sqrt", [f"{out}.ve"], [f"{out}.sd"]),
              helper.make_node("Div", [f"{out}.d", f"{out}.sd"], [out])]


def _ws_net() -> onnx.ModelProto:
    """Two weight-standardised convs with a ReLU between (timm's StdConv2d, decomposed)."""
    inits = {"w1.raw": w(C1, C0, 3, 3, seed=1), "b1": w(C1, seed=2), "w2.raw": w(C2, C1, 3, 3, seed=3)}
    nodes: list = []
    _standardised("w1.raw", "w1", nodes, inits)
    _standardised("w2.raw", "w2", nodes, inits)
    nodes += [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["a"], ["r"]),
              helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    return model(nodes, {"x": ["N", C0, 5, 5]}, {"y": ["N", C2, 5, 5]}, inits)


def _zeroed_bias_net() -> onnx.ModelProto:
    """Swin V2's ``qkv_bias[E:2E] = 0`` as a ScatterND on a stored bias, added after a MatMul."""
    e = 4
    inits = {"w": w(e, 3 * e, seed=4), "bias": w(3 * e, seed=5), "idx": np.arange(e, 2 * e).reshape(e, 1),
             "zeros": np.zeros(e, np.float32), "w2": w(3 * e, 2, seed=6)}
    nodes = [helper.make_node("ScatterND", ["bias", "idx", "zeros"], ["qkv_bias"]),
             helper.make_node("MatMul", ["x", "w"], ["h0"]),
             helper.make_node("Add", ["h0", "qkv_bias"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    return model(nodes, {"x": ["N", e]}, {"y": ["N", 2]}, inits)


def _feeds(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    shape = [2 if isinstance(d, str) else d for d in
             [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]]
    return {m.graph.input[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("build", [_ws_net, _zeroed_bias_net])
def test_folds_computed_weights_once_and_keeps_the_outputs(build) -> None:  # noqa: ANN001
    m = build()
    expected = run(m, _feeds(m))
    assert FoldWeightComputationsPass()(m).modified
    onnx.checker.check_model(m, full_check=True)
    ops = {n.op_type for n in m.graph.node}
    assert not ops & {"ReduceMean", "Sqrt", "Div", "ScatterND"}  # the computation is gone
    stored = {t.name for t in m.graph.initializer}
    assert not stored & {"w1.raw", "w2.raw", "bias", "zeros"}  # and the raw weights it read
    np.testing.assert_allclose(run(m, _feeds(m))[0], expected[0], rtol=1e-5, atol=1e-5)
    assert not FoldWeightComputationsPass()(m).modified  # idempotent


def test_weight_standardised_convs_prune_exactly() -> None:
    before = spa.analyze(_ws_net())  # analyze normalises its own copy: the convs couple like plain ones
    g = group_of(before, "w1", 0)
    assert g.prunable and g is group_of(before, "w2", 1) and g.n_units == C1
    pruned, _, report = prune_checked(_ws_net(), 0.5)  # masked equivalence on the original, unfolded
    assert report.groups_pruned == 1
    assert init_shape(pruned, "w1") == [C1 // 2, C0, 3, 3] and init_shape(pruned, "w2") == [C2, C1 // 2, 3, 3]


def test_zeroed_bias_prunes_exactly() -> None:
    pruned, _, report = prune_checked(_zeroed_bias_net(), 0.5)
    assert report.groups_pruned == 1 and init_shape(pruned, "qkv_bias") == [6]


def test_refuses_input_dependent_layout_only_and_resized_computations() -> None:
    """A weight scaled by a graph input, a transposed weight, and a table of another size than the
    weight it reads (a rotary-style Cos of an outer product) all stay as they are."""
    inits = {"wt": w(4, 3, seed=7), "freq": w(2, seed=8), "pos": np.arange(3, dtype=np.float32).reshape(3, 1),
             "w2": w(2, 4, seed=9)}
    nodes = [helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0]),  # layout only
             helper.make_node("Mul", ["w", "s"], ["ws"]),  # depends on the input s
             helper.make_node("MatMul", ["x", "ws"], ["h"]),
             helper.make_node("Mul", ["pos", "freq"], ["angles"]),  # (3, 2) from a 2-element weight
             helper.make_node("Cos", ["angles"], ["table"]),
             helper.make_node("MatMul", ["table", "w2"], ["t2"]),
             helper.make_node("Add", ["h", "t2"], ["y"])]
    m = model(nodes, {"x": [3, 3], "s": [1]}, {"y": [3, 4]}, inits)
    original = m.SerializeToString()
    assert not FoldWeightComputationsPass()(m).modified
    assert m.SerializeToString() == original


def test_torch_scaled_std_conv_prunes_with_both_exporters(tmp_path) -> None:  # noqa: ANN001
    """timm's StdConv2d written out: ``F.batch_norm(w.reshape(1, O, -1), training=True)``, which the
    TorchScript exporter writes as a training-mode BatchNormalization on the kernel."""
    torch = pytest.importorskip("torch")

    class StdConv(torch.nn.Conv2d):
        def forward(self, x):  # noqa: ANN001, ANN202
            weight = torch.nn.functional.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                                                    training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
            return torch.nn.functional.conv2d(x, weight, self.bias, self.stride, self.padding)

    torch.manual_seed(0)
    net = torch.nn.Sequential(StdConv(3, 8, 3, padding=1), torch.nn.ReLU(), StdConv(8, 4, 3, padding=1)).eval()
    x = torch.randn(1, 3, 6, 6)
    for exporter in ("ts", "dynamo"):
        path = tmp_path / f"ws.{exporter}.onnx"
        if exporter == "ts":
            torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, do_constant_folding=False,
                              input_names=["x"], output_names=["y"])
        else:
            torch.onnx.export(net, (x,), str(path), dynamo=True, optimize=False, external_data=False, verbose=False,
                              input_names=["x"], output_names=["y"])
        original = onnx.load(str(path))
        pruned, _, report = prune_checked(original, 0.5)
        assert report.groups_pruned == 1, exporter
        conv_weights = [init_shape(pruned, n.input[1]) for n in pruned.graph.node if n.op_type == "Conv"]
        assert conv_weights == [[4, 3, 3, 3], [4, 4, 3, 3]], exporter


def test_deep_graph_does_not_exhaust_the_recursion_limit() -> None:
    """timm mobileone_s0 (TorchScript) raised RecursionError here: asking whether the end of a
    3000-node chain is computed from weights only used to recurse once per node."""
    depth = 3000
    nodes = [helper.make_node("Relu", ["x" if k == 0 else f"t{k}"], [f"t{k + 1}"]) for k in range(depth)]
    nodes += [helper.make_node("Mul", ["s", "s"], ["s2"]), helper.make_node("Add", [f"t{depth}", "s2"], ["y"])]
    m = model(nodes, {"x": [2]}, {"y": [2]}, {"s": w(2, seed=10)})
    assert FoldWeightComputationsPass()(m).modified  # s·s is folded, the chain is left alone
    assert [n.op_type for n in m.graph.node][-1] == "Add" and len(m.graph.node) == depth + 1
