"""tf2onnx builds a Keras Flatten's target shape from int32 pieces and Casts it to int64:
``Reshape(Transpose(x), Cast(Concat(Slice(Cast(Shape(x), int32)), int32[C*H*W])))``. Pruning C
rewrites the int32 literal, which must stay int32 beside its Concat (RewriteSink keeps the
stored dtype)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from modelkit import conv, group_of, init_shape, model, prune_checked, w
from onnx import TensorProto, helper

import spa


def _nhwc_flatten(piece: str) -> object:
    """Conv (8 channels, 4x4) -> NHWC Transpose -> tf2onnx-style Flatten -> MatMul (128 -> 5).

    ``piece`` is how the int32 literal is stored: an ``initializer`` or a ``Constant`` node.
    """
    inits: dict = {"fc.w": w(128, 5), "zero": np.array([0], np.int64), "one": np.array([1], np.int64)}
    literal = np.array([8 * 4 * 4], np.int32)
    nodes = [
        conv("x", "c", 3, 8, inits=inits),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Shape", ["t"], ["s"]),
        helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.INT32),
        helper.make_node("Slice", ["s32", "zero", "one", "zero"], ["batch"]),
        helper.make_node("Concat", ["batch", "flat"], ["target32"], axis=0),
        helper.make_node("Cast", ["target32"], ["target"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["t", "target"], ["f"]),
        helper.make_node("MatMul", ["f", "fc.w"], ["y"]),
    ]
    if piece == "initializer":
        inits["flat"] = literal
    else:
        nodes.insert(0, helper.make_node("Constant", [], ["flat"], value=helper.make_tensor(
            "flat", TensorProto.INT32, [1], literal.tolist())))
    return model(nodes, {"x": ["N", 3, 4, 4]}, {"y": ["N", 5]}, inits)


def _int32_literal_of(m: object) -> list[int]:
    concat = next(n for n in m.graph.node if n.op_type == "Concat" and n.output[0] == "target32")  # type: ignore[attr-defined]
    t = next(i for i in m.graph.initializer if i.name == concat.input[1])  # type: ignore[attr-defined]
    assert t.data_type == TensorProto.INT32
    return [int(v) for v in np.frombuffer(t.raw_data, np.int32)] if t.raw_data else list(t.int32_data)


@pytest.mark.parametrize("piece", ["initializer", "Constant"])
def test_int32_target_piece_is_rewritten_as_int32(piece: str) -> None:
    m = _nhwc_flatten(piece)
    g = group_of(spa.analyze(m), "c.w", 0)
    assert g.prunable, g.blocked
    assert ("fc.w", 0) in g.members  # the NHWC flatten maps each channel to a strided set of rows
    pruned, plan, _ = prune_checked(m, 0.5)
    assert init_shape(pruned, "c.w")[0] == 4
    assert init_shape(pruned, "fc.w") == [64, 5]
    assert _int32_literal_of(pruned) == [4 * 4 * 4]


def _nhwc_squeeze_excite() -> object:
    """A Keras SE gate as tf2onnx writes it without optimizers: ``Reshape((1, 1, C))`` gets the
    target ``Cast(Concat(Unsqueeze(batch), Unsqueeze(int32 1), Unsqueeze(int32 1), Unsqueeze(int32 C)))``."""
    inits: dict = {"se1.w": w(8, 2), "se2.w": w(2, 8), "zero": np.array([0], np.int64), "one": np.array([1], np.int64)}
    nodes = [
        conv("x", "c", 3, 8, inits=inits),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("ReduceMean", ["t"], ["gap"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["gap", "se1.w"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("MatMul", ["hr", "se2.w"], ["e"]),
        helper.make_node("Sigmoid", ["e"], ["s"]),
        helper.make_node("Shape", ["s"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape32"], to=TensorProto.INT32),
        helper.make_node("Slice", ["shape32", "zero", "one", "zero"], ["b1"]),
        helper.make_node("Squeeze", ["b1", "zero"], ["batch"]),
    ]
    pieces = ["batch"]
    for k, v in enumerate([1, 1, 8]):
        nodes.append(helper.make_node("Constant", [], [f"k{k}"], value=helper.make_tensor(f"k{k}", TensorProto.INT32, [], [v])))
        pieces.append(f"k{k}")
    for p in pieces:
        nodes.append(helper.make_node("Unsqueeze", [p, "zero"], [f"{p}.u"]))
    nodes += [
        helper.make_node("Concat", [f"{p}.u" for p in pieces], ["target32"], axis=0),
        helper.make_node("Cast", ["target32"], ["target"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["s", "target"], ["gate"]),
        helper.make_node("Mul", ["t", "gate"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["back"], perm=[0, 3, 1, 2]),
        conv("back", "y", 8, 3, inits=inits),
    ]
    return model(nodes, {"x": ["N", 3, 4, 4]}, {"y": ["N", 3, 4, 4]}, inits)


def test_int32_unsqueezed_scalar_piece_is_rewritten_as_int32() -> None:
    m = _nhwc_squeeze_excite()
    g = group_of(spa.analyze(m), "c.w", 0)
    assert g.prunable, g.blocked
    assert ("se2.w", 1) in g.members  # the gate is coupled to the conv channels through the NHWC Mul
    pruned, _, _ = prune_checked(m, 0.5)
    assert init_shape(pruned, "c.w")[0] == 4 and init_shape(pruned, "se2.w")[1] == 4
    concat = next(n for n in pruned.graph.node if n.output[0] == "target32")
    last = next(i for i in pruned.graph.initializer if i.name == concat.input[3])
    assert last.data_type == TensorProto.INT32
    assert onnx.numpy_helper.to_array(last).tolist() == [4]
