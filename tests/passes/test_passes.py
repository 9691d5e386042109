"""Each pass: it does its rewrite, running it twice changes nothing, and it refuses a bad case."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from modelkit import conv, init_shape, model, w
from onnx import helper, numpy_helper

import spa
from spa.passes import (
    CleanupPass,
    DropValueInfoPass,
    PassError,
    PassManager,
    RewriteShapeConstantsPass,
    SliceInitializersPass,
    UpdateAttributesPass,
)
from spa.planning.plan import SliceEntry, kept_spaces


def _chain() -> onnx.ModelProto:
    inits: dict = {"shape": np.array([1, -1], np.int64), "fc": w(8 * 4, 3)}
    nodes = [conv("x", "a", 3, 8, inits=inits), conv("a", "dw", 8, 8, group=8, inits=inits),
             helper.make_node("Reshape", ["dw", "shape"], ["r"]), helper.make_node("MatMul", ["r", "fc"], ["y"])]
    return model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 3]}, inits)


def test_slice_initializers_slices_once_and_refuses_wrong_size() -> None:
    m = _chain()
    bias = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "a.b")).copy()
    p = SliceInitializersPass([SliceEntry("a.w", 0, 8, [1, 3]), SliceEntry("a.b", 0, 8, [1, 3])])
    assert p(m).modified
    assert init_shape(m, "a.w") == [2, 3, 3, 3]
    np.testing.assert_array_equal(numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "a.b")),
                                  bias[[1, 3]])
    assert not p(m).modified  # idempotent
    with pytest.raises(PassError):
        SliceInitializersPass([SliceEntry("a.w", 0, 5, [0, 1, 2])])(m)
    with pytest.raises(PassError):
        SliceInitializersPass([SliceEntry("missing", 0, 5, [0])])(m)


def _analysis_and_kept(m: onnx.ModelProto):
    a = spa.analyze(m)
    g = next(g for g in a.groups if ("a.w", 0) in g.members)
    kept = kept_spaces(a.groups, {g.id: np.array([0, 2, 5])})
    return a, kept


def test_update_attributes_sets_group_idempotently() -> None:
    a, kept = _analysis_and_kept(_chain())
    p = UpdateAttributesPass(a.ctx, kept)
    assert p(a.model).modified
    dw = next(n for n in a.model.graph.node if n.name == "dw")
    assert next(x.i for x in dw.attribute if x.name == "group") == 3
    assert not p(a.model).modified


def test_update_attributes_leaves_nodes_without_rules_alone() -> None:
    m = _chain()
    m.graph.node[1].op_type = "ConvInteger"  # no rule: its group is blocked, the node never touched
    a = spa.analyze(m)
    assert all(not g.prunable for g in a.groups if ("dw", 1) in g.members)
    before = a.model.SerializeToString()
    assert not UpdateAttributesPass(a.ctx, {})(a.model).modified
    assert a.model.SerializeToString() == before


def test_rewrite_shape_constants_never_mutates_shared_constant() -> None:
    m = _chain()
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([1, 32], np.int64), "shape"))
    # A second Reshape reads the same constant from an unpruned tensor.
    m.graph.node.append(helper.make_node("Reshape", ["x", "shape2"], ["r2"]))
    m.graph.initializer.append(numpy_helper.from_array(np.array([1, 12], np.int64), "shape2"))
    a, kept = _analysis_and_kept(m)
    p = RewriteShapeConstantsPass(a.ctx, kept)
    assert p(a.model).modified
    rs = next(n for n in a.model.graph.node if n.op_type == "Reshape" and n.input[0] == "dw")
    assert rs.input[1] != "shape"
    new = numpy_helper.to_array(next(t for t in a.model.graph.initializer if t.name == rs.input[1]))
    assert new.tolist() == [1, 12]
    assert numpy_helper.to_array(next(t for t in a.model.graph.initializer if t.name == "shape")).tolist() == [1, 32]
    assert not p(a.model).modified


def test_drop_value_info_only_named_tensors() -> None:
    m = onnx.shape_inference.infer_shapes(_chain())
    names = {v.name for v in m.graph.value_info}
    assert {"a", "dw"} <= names
    p = DropValueInfoPass(["a", "dw", "y"])
    assert p(m).modified
    assert {v.name for v in m.graph.value_info} == names - {"a", "dw"}
    assert [o.name for o in m.graph.output] == ["y"]
    assert not p(m).modified


def test_cleanup_removes_unused_initializers_and_sorts() -> None:
    m = _chain()
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "orphan"))
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(2, np.int64), "dead_shape"))
    m.graph.node.append(helper.make_node("Shape", ["a"], ["s"]))
    m.graph.node.append(helper.make_node("Add", ["s", "dead_shape"], ["s2"]))  # reads a dead node only
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))
    result = CleanupPass()(m)
    assert result.modified
    assert "orphan" not in {t.name for t in m.graph.initializer}
    assert "dead_shape" not in {t.name for t in m.graph.initializer}
    assert not any(n.op_type in ("Shape", "Add") for n in m.graph.node)
    onnx.checker.check_model(m, full_check=True)
    assert not CleanupPass()(m).modified


def test_cleanup_refuses_cycle() -> None:
    g = helper.make_graph([helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])], "cyc",
                          [], [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])])
    with pytest.raises(PassError):
        CleanupPass()(helper.make_model(g))


def test_pass_manager_reaches_fixpoint() -> None:
    a, kept = _analysis_and_kept(_chain())
    result = PassManager([UpdateAttributesPass(a.ctx, kept), CleanupPass()])(a.model)
    assert result.modified
    assert not PassManager([UpdateAttributesPass(a.ctx, kept), CleanupPass()])(a.model).modified


def test_materialize_views_copies_once_and_refuses_computed() -> None:
    from spa.passes import MaterializeViewsPass

    inits: dict = {"w0": w(4)}
    nodes = [helper.make_node("Identity", ["w0"], ["v1"]), helper.make_node("Identity", ["v1"], ["v2"]),
             helper.make_node("Relu", ["w0"], ["r"]), helper.make_node("Add", ["v2", "x"], ["y"])]
    m = model(nodes, {"x": [4]}, {"y": [4], "r": [4]}, inits)
    p = MaterializeViewsPass(["v2"])
    assert p(m).modified
    assert "v2" in {t.name for t in m.graph.initializer}
    assert not any("v2" in n.output for n in m.graph.node)
    np.testing.assert_array_equal(numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "v2")),
                                  inits["w0"])
    assert not p(m).modified
    with pytest.raises(PassError):
        MaterializeViewsPass(["r"])(m)


def test_compensate_weights_writes_once_and_refuses_unknown() -> None:
    from spa.passes import CompensateWeightsPass

    m = _chain()
    new_w = np.full((8, 3, 3, 3), 0.5, np.float32)
    kept = {("y", 1): np.array([0, 2])}
    p = CompensateWeightsPass({"a.w": new_w}, {"dw": np.arange(8, dtype=np.float64)}, kept)
    assert p(m).modified
    np.testing.assert_array_equal(numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "a.w")), new_w)
    dw = next(n for n in m.graph.node if n.name == "dw")
    assert dw.input[2] == "dw__spa_bias"
    assert not p(m).modified
    with pytest.raises(PassError):
        CompensateWeightsPass({"nope": new_w}, {}, {})(m)


def test_materialize_and_slice_skip_a_view_nothing_reads_any_more() -> None:
    """A compensated bias replaces a view's only reader; CleanupPass then drops the copy that
    MaterializeViewsPass made, and the next round must not look for it again."""
    from spa.passes import MaterializeViewsPass

    inits: dict = {"w0": w(4)}
    nodes = [helper.make_node("Identity", ["w0"], ["v1"]), helper.make_node("Add", ["v1", "x"], ["y"])]
    m = model(nodes, {"x": [4]}, {"y": [4]}, inits)
    materialize, slicer = MaterializeViewsPass(["v1"]), SliceInitializersPass([SliceEntry("v1", 0, 4, [0, 2])])
    assert materialize(m).modified and slicer(m).modified
    m.graph.node[0].input[0] = "w0"  # the reader now reads another tensor; v1 is unused
    CleanupPass()(m)
    assert "v1" not in {t.name for t in m.graph.initializer}
    assert not materialize(m).modified
    assert not slicer(m).modified
    with pytest.raises(PassError):  # still read, yet neither stored nor a view: refused as before
        SliceInitializersPass([SliceEntry("x", 0, 4, [0])])(m)


def test_obspa_prunes_convs_whose_biases_are_views_of_one_folded_tensor() -> None:
    """TorchScript's default export (constant folding) folds each BatchNorm into its Conv and
    shares equal biases as ``Identity`` views of one initializer (torchvision ResNets:
    ``onnx::Conv_197 = Identity(onnx::Conv_194)``); obspa gives those Convs new biases."""
    inits: dict = {"shared_b": np.zeros(8, np.float32)}
    nodes = []
    for k, (src, cin) in enumerate([("x", 3), ("r0", 8), ("r1", 8)]):
        nodes.append(helper.make_node("Identity", ["shared_b"], [f"b{k}"], name=f"Identity_{k}"))
        nodes.append(conv(src, f"c{k}", cin, 8, bias=False, inits=inits))
        nodes[-1].input.append(f"b{k}")
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"]))
    nodes.append(helper.make_node("ReduceMean", ["r2"], ["y"], axes=[2, 3], keepdims=0))
    m = model(nodes, {"x": ["N", 3, 8, 8]}, {"y": ["N", 8]}, inits, opset=17)
    pruned, plan, _ = spa.prune(m, ratio=0.5, criterion="obspa")
    assert plan.slices and plan.compensated
    onnx.checker.check_model(pruned, full_check=True)
    shapes = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert shapes["c0.w"][0] == 4 and shapes["c1.w"][:2] == [4, 4]
