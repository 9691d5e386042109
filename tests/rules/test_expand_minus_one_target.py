"""TorchScript's ``expand(b, c, n, h, w)`` target: ``Where(Equal(T, -1), 1, T)`` over sizes read at
run time. It is how ``repeat_kv`` (grouped-query attention) is exported; the sizes it reads only
become a shape, so the channels they read stay prunable (a KV head and its copies are one unit).
"""

from __future__ import annotations

import numpy as np
from modelkit import conv, group_of, init_shape, model, prune_checked
from onnx import TensorProto, helper

import spa

C, REP = 4, 2


def _i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def _repeat_channels(where_target: bool = True) -> object:
    """a: [N, C, 5, 5] -> Expand([N, C, 1, 5, 5] -> [N, C, REP, 5, 5]) -> Reshape [N, C*REP, 5, 5] -> Conv."""
    inits: dict = {"ax2": _i64(2), "ax0": _i64(0), "flat": _i64(-1), "minus": _i64(-1), "rep": _i64(REP),
             "rep0": np.array(REP, dtype=np.int64)}
    nodes = [conv("x", "a", 3, C, inits=inits), helper.make_node("Unsqueeze", ["a", "ax2"], ["u"]),
             helper.make_node("Shape", ["a"], ["sh"])]
    for i in range(4):
        inits[f"i{i}"] = np.array(i, dtype=np.int64)  # a scalar index, as exported
        nodes += [helper.make_node("Gather", ["sh", f"i{i}"], [f"g{i}"], axis=0),
                  helper.make_node("Unsqueeze", [f"g{i}", "ax0"], [f"p{i}"])]
    nodes += [helper.make_node("Concat", ["p0", "p1", "rep", "p2", "p3"], ["cat"], axis=0),
              helper.make_node("Reshape", ["cat", "flat"], ["t"])]
    if where_target:
        nodes += [helper.make_node("Shape", ["t"], ["tsh"]),
                  helper.make_node("ConstantOfShape", ["tsh"], ["ones"],
                                   value=helper.make_tensor("one", TensorProto.INT64, [1], [1])),
                  helper.make_node("Mul", ["ones", "minus"], ["m1"]),
                  helper.make_node("Equal", ["t", "m1"], ["eq"]),
                  helper.make_node("Where", ["eq", "ones", "t"], ["target"])]
    else:  # the comparison feeds arithmetic, not a Where: a real read of the size
        nodes += [helper.make_node("Equal", ["t", "minus"], ["eq"]),
                  helper.make_node("Cast", ["eq"], ["eqi"], to=TensorProto.INT64),
                  helper.make_node("Add", ["t", "eqi"], ["target"])]
    nodes += [helper.make_node("Expand", ["u", "target"], ["e"]),
              helper.make_node("Mul", ["g1", "rep0"], ["c2"]),
              helper.make_node("Unsqueeze", ["c2", "ax0"], ["pc"]),
              helper.make_node("Concat", ["p0", "pc", "p2", "p3"], ["merged"], axis=0),
              helper.make_node("Reshape", ["e", "merged"], ["r"]),
              conv("r", "y", C * REP, 3, inits=inits)]
    return model(nodes, {"x": ["N", 3, 5, 5]}, {"y": ["N", 3, 5, 5]}, inits)


def test_where_minus_one_expand_target_is_a_shape_sink() -> None:
    a = spa.analyze(_repeat_channels())
    g = group_of(a, "a.w", 0)
    assert g.prunable, g.blocked
    assert g.n_units == C and ("y.w", 1) in g.members
    assert list(np.bincount(g.unit_of[("y.w", 1)])) == [REP] * C  # a channel and its copies: one unit
    pruned, _, _ = prune_checked(_repeat_channels(), 0.5)  # masked equivalence with a batch of 2
    assert init_shape(pruned, "a.w")[0] == C // 2 and init_shape(pruned, "y.w")[1] == C // 2 * REP


def test_equal_feeding_arithmetic_still_blocks() -> None:
    g = group_of(spa.analyze(_repeat_channels(where_target=False)), "a.w", 0)
    assert not g.prunable
    assert any("is read at run time by Equal" in r for r in g.blocked), g.blocked
