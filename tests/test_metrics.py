"""Params and MACs against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from modelkit import conv, model, w
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.model.metrics import measure, node_macs


def test_conv_gemm_matmul_convtranspose_macs() -> None:
    inits: dict = {"ct.w": w(4, 2, 2, 2), "fc.w": w(10, 2 * 8 * 8), "mm.w": w(10, 3)}
    nodes = [conv("x", "c1", 3, 8, k=3, inits=inits),                     # 8·4·4 out × 3·3·3
             conv("c1", "dw", 8, 8, k=3, group=4, inits=inits),           # 8·4·4 out × 2·3·3
             conv("dw", "c2", 8, 4, k=1, bias=False, inits=inits),        # 4·4·4 out × 8
             helper.make_node("ConvTranspose", ["c2", "ct.w"], ["ct"], strides=[2, 2]),  # 4·4·4 in × 2·2·2
             helper.make_node("Flatten", ["ct"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.w"], ["g"], transB=1),     # 1·10 × 128
             helper.make_node("MatMul", ["g", "mm.w"], ["y"])]             # 1·3 × 10
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 3]}, inits)
    cost = measure(spa.analyze(m).ctx)
    expected = 8 * 16 * 27 + 8 * 16 * 18 + 4 * 16 * 8 + 4 * 16 * 8 + 10 * 128 + 3 * 10
    assert cost.macs == expected
    assert cost.params == sum(v.size for v in inits.values())


def test_pruning_reduces_macs_as_computed() -> None:
    inits: dict = {}
    nodes = [conv("x", "c1", 3, 8, k=3, inits=inits), conv("c1", "y", 8, 2, k=3, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    _, _, report = spa.prune(m, ratio=0.5)
    assert report.before.macs == 16 * (8 * 27 + 2 * 72)
    assert report.after.macs == 16 * (4 * 27 + 2 * 36)
    assert report.after.params == report.before.params - 4 * 27 - 4 - 2 * 4 * 9
    assert np.isclose(report.after.size_bytes / report.before.size_bytes, 0.5, atol=0.2)


def _contrib_model(nodes: list, inputs: dict, outputs: dict, inits: dict) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "contrib", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


def test_contrib_attention_mha_fusedmatmul_macs() -> None:
    """com.microsoft ops hide matrix products: counted by hand, S = 3 queries, L = 5 keys."""
    inits = {"w": w(8, 24), "b": w(24), "fw": w(8, 4)}
    nodes = [helper.make_node("Attention", ["x", "w", "b"], ["a"], domain="com.microsoft", num_heads=2),
             helper.make_node("MultiHeadAttention", ["a", "k", "v"], ["m"], domain="com.microsoft", num_heads=2),
             helper.make_node("FusedMatMul", ["a", "fw"], ["f"], domain="com.microsoft", alpha=0.5)]
    m = _contrib_model(nodes, {"x": [1, 3, 8], "k": [1, 5, 8], "v": [1, 5, 6]}, {"m": [1, 3, 6], "f": [1, 3, 4]}, inits)
    got = spa.analyze(m).ctx
    by_op = {n.op_type: node_macs(n, got) for n in got.model.graph.node}
    assert by_op["Attention"] == 3 * 8 * 24 + 3 * 3 * 8 + 3 * 3 * 8  # QKV projection, Q·Kᵀ, softmax·V
    assert by_op["MultiHeadAttention"] == 3 * 5 * 8 + 3 * 5 * 6  # Q·Kᵀ over 5 keys, softmax·V of width 6
    assert by_op["FusedMatMul"] == 3 * 4 * 8
    assert measure(got).macs == sum(by_op.values())


def test_fused_attention_counts_what_the_unfused_graph_counts() -> None:
    """The onnxruntime-fused BERT counts the MACs of its plain exports (before: 45,248 vs 70,080)."""
    zoo = Path(__file__).resolve().parents[1] / "models" / "zoo" / "hf"
    macs = {e: measure(spa.analyze(zoo / f"hf_bert.{e}.onnx").ctx, with_size=False).macs for e in ("ts", "ortopt")}
    assert macs["ortopt"] == macs["ts"]


def test_symbolic_contraction_counts_one() -> None:
    """softmax·V contracts over a dynamic sequence; like every symbolic size, it counts 1."""
    m = model([helper.make_node("MatMul", ["p", "v"], ["y"])], {"p": [1, 2, "S", "S"], "v": [1, 2, "S", 4]},
              {"y": [1, 2, "S", 4]})
    assert measure(spa.analyze(m).ctx).macs == 2 * 4


def test_einsum_macs_count_every_label_once() -> None:
    """MaxViT's attention as Einsum: scores ``b·h·i·j·d`` and context ``b·h·i·j·d``, like the MatMuls."""
    b, h, i, d = 1, 2, 3, 4
    nodes = [helper.make_node("Einsum", ["q", "k"], ["s"], equation="B H I D, B H J D -> B H I J"),
             helper.make_node("Einsum", ["s", "v"], ["y"], equation="bhij,bhjd->bhid")]
    m = model(nodes, {"q": [b, h, i, d], "k": [b, h, i, d], "v": [b, h, i, d]}, {"y": [b, h, i, d]})
    assert measure(spa.analyze(m).ctx).macs == 2 * b * h * i * i * d


def test_batch_merged_with_windows_counts_every_window() -> None:
    """Swin's window partition with a dynamic batch, as TorchScript exports it: ``Reshape(x, [-1, 4, C])``
    gives axis 0 = batch x 4 windows, symbolic in static inference; the MatMul after it runs once
    per window, so at batch 1 it costs 4 windows x 4 tokens x C x D (it counted one window before)."""
    c, d = 3, 5
    inits = {"rows": np.array([-1, 4, c], np.int64), "w": w(c, d)}
    nodes = [helper.make_node("Reshape", ["x", "rows"], ["win"]), helper.make_node("MatMul", ["win", "w"], ["y"])]
    m = model(nodes, {"x": ["N", 4, 4, c]}, {"y": ["M", 4, d]}, inits)
    assert measure(spa.analyze(m).ctx).macs == 4 * 4 * c * d
    _, _, report = spa.prune(m, ratio=0.0)
    assert report.before.macs == report.after.macs == 4 * 4 * c * d
