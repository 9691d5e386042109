"""Rotary position embeddings (RoPE) under ``--prune-heads dims``, on attention built by hand.

``rotate_half`` (LLaMA) reads the head dim in two halves: ``q·cos + cat(-q[D/2:], q[:D/2])·sin``.
Dim ``i`` and dim ``i + D/2`` are one rotation pair, so a unit is the pair: the Slice/Concat of
``rotate_half`` and the residual ``Add`` tie ``i`` to ``i + D/2``, and pruning a pair keeps the other
pairs' rotations intact (masked equivalence with several positions, where ``sin != 0``).
An interleaved rotation (GPT-J ``rotate_every_two``: pairs ``(2j, 2j+1)`` read by step-2 Slices)
cannot be sliced as a range, so its dims group is blocked with a reason naming the Slice; whole
heads still prune.
"""

from __future__ import annotations

import numpy as np
import onnx
from modelkit import group_of, init_shape, model, prune_checked, w
from onnx import helper

import spa
from spa.records import Selection

S, E, H, D = 4, 16, 2, 8


def _i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def _tables(inits: dict, where: str) -> tuple[list, str, str]:
    """cos/sin of shape [S, D]: stored whole, built as Concat(f, f) from a [S, D/2] table (stored, or computed
    from a Range of literals), or graph inputs."""
    theta = np.arange(S)[:, None] * (10000.0 ** (-np.arange(D // 2) / (D // 2)))[None, :]
    if where == "stored":
        inits["cos"] = np.cos(np.concatenate([theta, theta], 1)).astype(np.float32)
        inits["sin"] = np.sin(np.concatenate([theta, theta], 1)).astype(np.float32)
        return [], "cos", "sin"
    nodes = [helper.make_node("Concat", ["theta", "theta"], ["emb"], axis=1),
             helper.make_node("Cos", ["emb"], ["cos"]), helper.make_node("Sin", ["emb"], ["sin"])]
    if where == "concat":
        inits["theta"] = theta.astype(np.float32)
        return nodes, "cos", "sin"
    if where == "range":  # the dynamo exporter: inv_freq = base ** (-arange(0, D/2) / (D/2)), computed in the graph
        inits.update({"r0": np.array(0.0, np.float32), "r1": np.array(D // 2, np.float32),
                      "r2": np.array(1.0, np.float32), "expo": np.array(-1.0 / (D // 2), np.float32),
                      "base": np.array(10000.0, np.float32), "pos": np.arange(S, dtype=np.float32)[:, None]})
        return [helper.make_node("Range", ["r0", "r1", "r2"], ["ar"]),
                helper.make_node("Mul", ["ar", "expo"], ["ex"]), helper.make_node("Pow", ["base", "ex"], ["inv"]),
                helper.make_node("Mul", ["pos", "inv"], ["theta"]), *nodes], "cos", "sin"
    return [], "cos_in", "sin_in"  # graph inputs


def _rope(p: str, cos: str, sin: str, interleaved: bool) -> list:
    """``{p}r = {p}·cos + rot({p})·sin`` on ``{p}`` of shape [1, H, S, D]."""
    if interleaved:  # (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)
        nodes = [helper.make_node("Slice", [p, "z", "big", "ax3", "two"], [f"{p}_even"]),
                 helper.make_node("Slice", [p, "one", "big", "ax3", "two"], [f"{p}_odd"]),
                 helper.make_node("Neg", [f"{p}_odd"], [f"{p}_nodd"]),
                 helper.make_node("Unsqueeze", [f"{p}_nodd", "ax4"], [f"{p}_a"]),
                 helper.make_node("Unsqueeze", [f"{p}_even", "ax4"], [f"{p}_b"]),
                 helper.make_node("Concat", [f"{p}_a", f"{p}_b"], [f"{p}_st"], axis=4),
                 helper.make_node("Reshape", [f"{p}_st", "heads_t"], [f"{p}_rot"])]
    else:
        nodes = [helper.make_node("Slice", [p, "z", "half", "ax3"], [f"{p}_lo"]),
                 helper.make_node("Slice", [p, "half", "big", "ax3"], [f"{p}_hi"]),
                 helper.make_node("Neg", [f"{p}_hi"], [f"{p}_nhi"]),
                 helper.make_node("Concat", [f"{p}_nhi", f"{p}_lo"], [f"{p}_rot"], axis=3)]
    return nodes + [helper.make_node("Mul", [p, cos], [f"{p}_c"]),
                    helper.make_node("Mul", [f"{p}_rot", sin], [f"{p}_s"]),
                    helper.make_node("Add", [f"{p}_c", f"{p}_s"], [f"{p}r"])]


def _model(tables: str = "stored", interleaved: bool = False) -> onnx.ModelProto:
    inits: dict = {"wq": w(E, E, seed=1), "wk": w(E, E, seed=2), "wv": w(E, E, seed=3), "wo": w(E, E, seed=4),
                   "heads": _i64(1, S, H, D), "heads_t": _i64(1, H, S, D), "merged": _i64(1, S, E),
                   "z": _i64(0), "one": _i64(1), "two": _i64(2), "half": _i64(D // 2), "big": _i64(D),
                   "ax3": _i64(3), "ax4": _i64(4), "scale": np.array(D ** -0.5, np.float32)}
    nodes, cos, sin = _tables(inits, tables)
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"]),
                  helper.make_node("Reshape", [f"{p}0", "heads"], [f"{p}1"]),
                  helper.make_node("Transpose", [f"{p}1"], [p], perm=[0, 2, 1, 3])]
    nodes += _rope("q", cos, sin, interleaved) + _rope("k", cos, sin, interleaved)
    nodes += [helper.make_node("Transpose", ["kr"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["qr", "kt"], ["s0"]),
              helper.make_node("Mul", ["s0", "scale"], ["s"]),
              helper.make_node("Softmax", ["s"], ["pr"], axis=-1),
              helper.make_node("MatMul", ["pr", "v"], ["c"]),
              helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ct", "merged"], ["cm"]),
              helper.make_node("MatMul", ["cm", "wo"], ["y"])]
    inputs: dict = {"x": [1, S, E]}
    if tables == "inputs":
        inputs.update({"cos_in": [S, D], "sin_in": [S, D]})
    return model(nodes, inputs, {"y": [1, S, E]}, inits)


def _dims_group(a: spa.Analysis):  # noqa: ANN202 - spa.analysis.groups.Group
    return group_of(a, "wq", 1)


def test_rotate_half_pairs_i_with_i_plus_half() -> None:
    for tables in ("stored", "concat", "range"):
        a = spa.analyze(_model(tables), prune_heads="dims")
        g = _dims_group(a)
        assert g.prunable, g.blocked
        assert g is group_of(a, "wk", 1) and g.n_units == D // 2
        unit = g.unit_of[("wq", 1)].reshape(H, D)
        np.testing.assert_array_equal(unit[:, : D // 2], unit[:, D // 2:])  # a unit is the pair (i, i + D/2)
        assert len(set(unit[0])) == D // 2 and (unit == unit[0]).all()  # the same dims in every head
        pruned, plan, _ = prune_checked(_model(tables), 0.5,
                                        selection=Selection(prune_heads="dims"))  # S = 4 positions, sin != 0
        assert init_shape(pruned, "wq") == [E, H * D // 2] and init_shape(pruned, "wk") == [E, H * D // 2]
        kept = next(s.keep for s in plan.slices if s.initializer == "wq" and s.axis == 1)
        lo = [i for i in kept if i % D < D // 2]
        assert [i + D // 2 for i in lo] == [i for i in kept if i % D >= D // 2]  # pairs kept together
        if tables == "range":  # the Range's readers now read the literal of the kept frequencies
            assert not any(n.op_type == "Range" for n in pruned.graph.node)


def test_rotary_tables_given_as_inputs_block_dims_by_name() -> None:
    g = _dims_group(spa.analyze(_model("inputs"), prune_heads="dims"))
    assert not g.prunable
    assert any("cos_in" in r or "sin_in" in r for r in g.blocked), g.blocked


def test_interleaved_rotation_blocks_dims_but_prunes_whole_heads() -> None:
    a = spa.analyze(_model(interleaved=True), prune_heads="dims")
    g = _dims_group(a)
    assert not g.prunable
    assert any("Slice" in r and "step 2" in r for r in g.blocked), g.blocked
    assert group_of(a, "wv", 1).prunable  # V's dims do not rotate
    pruned, _, _ = prune_checked(_model(interleaved=True), 0.5)  # whole heads (the default)
    assert init_shape(pruned, "wq") == [E, D]


def test_ratio_keeps_unrelated_groups_prunable_with_rotary_dims_blocked() -> None:
    pruned, _, report = prune_checked(_model(interleaved=True), 0.5, selection=Selection(prune_heads="dims"))
    assert report.groups_pruned >= 1 and init_shape(pruned, "wv") == [E, H * D // 2]
    assert init_shape(pruned, "wq") == [E, E]
