"""LSTM / GRU / RNN hidden units (spa/analysis/rules/recurrent.py) and zero-filled initial states
(ConstantOfShapeRule): gates sliced together, ``hidden_size`` rewritten, masked equivalence at
several sequence lengths, and the activations that cannot be pruned refused with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import group_of, init_shape, model, run, w
from onnx import helper

import spa
from spa.check.verify import mask_model

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _recurrent(op: str, hidden: int = 6, features: int = 5, directions: int = 1, peepholes: bool = False,
               activations: list[str] | None = None) -> onnx.ModelProto:
    """x (T, N, 5) -> op -> Y (T, dirs, N, H) -> Transpose/Reshape (T, N, dirs·H) -> MatMul -> (T, N, 3)."""
    g = GATES[op]
    inits: dict[str, np.ndarray] = {
        "W": w(directions, g * hidden, features), "R": w(directions, g * hidden, hidden) * 0.5,
        "B": w(directions, 2 * g * hidden), "h0": np.zeros((directions, 2, hidden), np.float32),
        "perm_shape": np.array([0, 0, -1], np.int64), "fc": w(directions * hidden, 3),
    }
    ins = ["x", "W", "R", "B", "", "h0"]
    if op == "LSTM":
        inits["c0"] = np.zeros((directions, 2, hidden), np.float32)
        ins.append("c0")
        if peepholes:
            inits["P"] = w(directions, 3 * hidden)
            ins.append("P")
    kw: dict = {"hidden_size": hidden, "direction": "bidirectional" if directions == 2 else "forward"}
    if activations:
        kw["activations"] = activations
    nodes = [helper.make_node(op, ins, ["Y", "Y_h"], name="rnn", **kw),
             helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["Yt", "perm_shape"], ["Yr"]),
             helper.make_node("MatMul", ["Yr", "fc"], ["y"])]
    return model(nodes, {"x": ["T", 2, features]}, {"y": ["T", 2, 3]}, inits)


def _equivalent_at(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: spa.Plan, lengths=(1, 4, 9)) -> None:
    masked = mask_model(original, plan)
    for t in lengths:
        feeds = {"x": np.random.default_rng(t).standard_normal((t, 2, 5)).astype(np.float32)}
        ref, got = run(masked, feeds)[0], run(pruned, feeds)[0]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 + 1e-4 * float(np.abs(ref).max()))


@pytest.mark.parametrize("op,directions,peepholes", [("LSTM", 1, False), ("LSTM", 2, True), ("GRU", 2, False),
                                                     ("RNN", 1, False)])
def test_hidden_units_prune_exactly(op: str, directions: int, peepholes: bool) -> None:
    m = _recurrent(op, directions=directions, peepholes=peepholes)
    a = spa.analyze(m)
    hidden = group_of(a, "R", 2)
    assert hidden.prunable and hidden.n_units == 6
    assert {("W", 1), ("R", 1), ("B", 1), ("h0", 2), ("Y", 3)} <= set(hidden.members)
    pruned, plan, _ = spa.prune(m, ratio=0.5, criterion="l1")
    onnx.checker.check_model(pruned, full_check=True)
    g = GATES[op]
    assert init_shape(pruned, "W") == [directions, g * 3, 5] and init_shape(pruned, "R") == [directions, g * 3, 3]
    assert init_shape(pruned, "B") == [directions, 2 * g * 3] and init_shape(pruned, "fc") == [directions * 3, 3]
    if peepholes:
        assert init_shape(pruned, "P") == [directions, 9]
    node = next(n for n in pruned.graph.node if n.op_type == op)
    assert next(a.i for a in node.attribute if a.name == "hidden_size") == 3
    _equivalent_at(m, pruned, plan)


def test_the_gates_of_one_unit_go_together() -> None:
    m = _recurrent("LSTM", hidden=4)
    pruned, plan, _ = spa.prune(m, ratio=0.5, criterion="l1")
    keep = {(s.initializer, s.axis): s.keep for s in plan.slices}
    units = keep[("R", 2)]
    assert len(units) == 2
    assert keep[("W", 1)] == keep[("R", 1)] == [gate * 4 + h for gate in range(4) for h in units]
    assert keep[("B", 1)] == [half * 4 + h for half in range(8) for h in units]
    assert keep[("h0", 2)] == keep[("c0", 2)] == keep[("fc", 0)] == units


def test_activation_that_does_not_keep_zero_blocks_with_reason() -> None:
    m = _recurrent("GRU", activations=["Sigmoid", "Sigmoid"])
    hidden = group_of(spa.analyze(m), "R", 2)
    assert not hidden.prunable
    assert any("Sigmoid" in r and "0 to 0" in r for r in hidden.blocked)
    ok = _recurrent("GRU", activations=["Sigmoid", "Relu"])
    assert group_of(spa.analyze(ok), "R", 2).prunable


def test_initial_state_given_as_an_input_is_the_interface() -> None:
    m = _recurrent("RNN")
    m.graph.initializer.remove(next(t for t in m.graph.initializer if t.name == "h0"))
    m.graph.input.append(helper.make_tensor_value_info("h0", onnx.TensorProto.FLOAT, [1, 2, 6]))
    hidden = group_of(spa.analyze(m), "R", 2)
    assert not hidden.prunable and any("h0" in r for r in hidden.blocked)


def test_zero_filled_state_from_constant_of_shape_is_rewritten() -> None:
    """TorchScript: initial_h = ConstantOfShape(Concat([1], batch, [H])); the H piece follows."""
    m = _recurrent("GRU")
    g = m.graph
    g.initializer.remove(next(t for t in g.initializer if t.name == "h0"))
    g.initializer.extend([onnx.numpy_helper.from_array(np.array([1], np.int64), "dirs"),
                          onnx.numpy_helper.from_array(np.array([6], np.int64), "hid"),
                          onnx.numpy_helper.from_array(np.array([1], np.int64), "one_idx")])
    pre = [helper.make_node("Shape", ["x"], ["xs"]), helper.make_node("Gather", ["xs", "one_idx"], ["nb"]),
           helper.make_node("Concat", ["dirs", "nb", "hid"], ["h0_shape"], axis=0),
           helper.make_node("ConstantOfShape", ["h0_shape"], ["h0"])]
    for k, n in enumerate(pre):
        g.node.insert(k, n)
    onnx.checker.check_model(m, full_check=True)
    pruned, plan, _ = spa.prune(m, ratio=0.5, criterion="l1")
    _equivalent_at(m, pruned, plan)
    filled = next(n for n in pruned.graph.node if n.op_type == "ConstantOfShape")
    assert filled is not None and init_shape(pruned, "R") == [1, 9, 3]
    m.graph.node[3].attribute.append(helper.make_attribute("value", onnx.numpy_helper.from_array(
        np.array([0.5], np.float32))))
    assert any("other than 0" in r for r in group_of(spa.analyze(m), "R", 2).blocked)


@pytest.mark.torch
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_torch_exports_prune_hidden_units(tmp_path: Path, run_spa, cell: str) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(8, 16, 3, padding=1)
            self.rnn = getattr(nn, cell)(16, 24, batch_first=True, bidirectional=cell == "GRU")
            self.fc = nn.Linear(24 * (2 if cell == "GRU" else 1), 10)

        def forward(self, x):  # noqa: ANN001, ANN202
            y, _ = self.rnn(torch.relu(self.conv(x)).transpose(1, 2))
            return self.fc(y[:, -1])

    torch.manual_seed(0)
    module = Classifier().eval()
    x = torch.randn(2, 8, 12)
    paths = {"ts": tmp_path / "ts.onnx", "tsfold": tmp_path / "tsfold.onnx", "dynamo": tmp_path / "dynamo.onnx"}
    axes = {"x": {0: "batch", 2: "time"}, "y": {0: "batch"}}
    for key, fold in (("ts", False), ("tsfold", True)):
        torch.onnx.export(module, (x,), str(paths[key]), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes=axes, do_constant_folding=fold)
    torch.onnx.export(module, (x,), str(paths["dynamo"]), dynamo=True, input_names=["x"], output_names=["y"],
                      external_data=False)
    for key, path in paths.items():
        original = spa.load_model(path)
        hidden = group_of(spa.analyze(original), "fc.weight", 1)
        assert hidden.prunable, (key, hidden.blocked)
        pruned, plan, report = spa.prune(original, ratio=0.5, criterion="l1")
        assert report.after.params < report.before.params
        masked = mask_model(original, plan)
        for t in ((12,) if key == "dynamo" else (3, 12, 20)):  # dynamo: a static time axis
            feeds = {"x": np.random.default_rng(t).standard_normal((2, 8, t)).astype(np.float32)}
            ref, got = run(masked, feeds)[0], run(pruned, feeds)[0]
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 + 1e-4 * float(np.abs(ref).max()))
    code, _, err = run_spa("prune", paths["ts"], "--ratio", "0.5", "-o", tmp_path / "small.onnx")  # the default criterion
    assert code == 0, err


def test_macs_count_every_step_and_shrink_with_the_hidden_units() -> None:
    m = _recurrent("LSTM", hidden=6, directions=2)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 7  # T = 7 steps, batch 2
    from spa.model.graph import ModelContext
    from spa.model.metrics import node_macs
    from spa.model.shapes import infer_shapes

    ctx = ModelContext.build(m, infer_shapes(m))
    lstm = next(n for n in m.graph.node if n.op_type == "LSTM")
    assert node_macs(lstm, ctx) == 7 * 2 * 2 * 24 * (5 + 6)
    _, _, report = spa.prune(m, ratio=0.5, criterion="l1")
    assert report.after.macs < report.before.macs
