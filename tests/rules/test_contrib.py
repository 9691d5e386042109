"""onnxruntime contrib ops (com.microsoft): registry domains, fused MLP activations, skip
LayerNorms, fused Attention / MultiHeadAttention heads, RotaryEmbedding, FusedMatMul, refused
ops, and the onnxruntime-optimised zoo files.

Tiny graphs are built in code and run in onnxruntime. Where pruning is exact, the pruned model
must equal the original with the removed channels zeroed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import assert_masked_equivalent, group_of, init_shape, prune_checked, run, w
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.analysis.rules import Rule, register, rule_for
from spa.analysis.rules.contrib import AttentionRule, ContribGeluRule
from spa.analysis.rules.elementwise import UnaryRule
from spa.check.verify import mask_model
from spa.pipeline.api import analyze
from spa.records import Selection

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from models.transformers_zoo import SPECS, feeds  # noqa: E402  (no torch or transformers needed)

HF = ROOT / "models" / "zoo" / "hf"
MS = "com.microsoft"
B, S, D = 2, 5, 16


def ms_model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], outputs: dict[str, list[int]],
             inputs: dict[str, list[int]] | None = None, int_inits: dict[str,
                                                                         np.ndarray] | None = None) -> onnx.ModelProto:
    """A checked float model importing the default domain (opset 17) and com.microsoft."""
    ins = inputs or {"x": [B, S, D]}
    g = helper.make_graph(
        nodes, "contrib",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in ins.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(v, k) for k, v in {**inits, **(int_inits or {})}.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def node(op: str, ins: list[str], outs: list[str], **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, ins, outs, name=outs[0], domain=MS, **attrs)


def matmul(x: str, y: str) -> onnx.NodeProto:
    return helper.make_node("MatMul", [x, f"{y}.w"], [y], name=y)


def attrs_of(m: onnx.ModelProto, op: str) -> dict[str, object]:
    n = next(n for n in m.graph.node if n.op_type == op)
    return {a.name: helper.get_attribute_value(a) for a in n.attribute}


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_registry_matches_domain_and_op_type() -> None:
    assert isinstance(rule_for(helper.make_node("Gelu", ["x"], ["y"])), UnaryRule)
    assert isinstance(rule_for(helper.make_node("Gelu", ["x"], ["y"], domain="ai.onnx")), UnaryRule)
    assert isinstance(rule_for(helper.make_node("Gelu", ["x"], ["y"], domain=MS)), ContribGeluRule)
    assert isinstance(rule_for(helper.make_node("Attention", ["x"], ["y"], domain=MS)), AttentionRule)
    assert rule_for(helper.make_node("Attention", ["x"], ["y"])) is None  # not a default-domain op
    assert rule_for(helper.make_node("BiasGelu", ["x"], ["y"], domain="com.example")) is None
    assert "com.microsoft::Attention" in spa.analysis.rules.registered_op_types()


def test_registry_refuses_a_second_rule_for_the_same_domain_and_op() -> None:
    class Dup(Rule):
        domain = MS
        op_types = ("BiasGelu",)

    with pytest.raises(ValueError, match="com.microsoft::BiasGelu"):
        register(Dup)


# ---------------------------------------------------------------------------------------------
# element-wise activations inside an MLP
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op,bias,attrs", [("BiasGelu", True, {}), ("FastGelu", True, {}), ("FastGelu", False, {}),
                                           ("Gelu", False, {}), ("QuickGelu", False, {"alpha": 1.702})])
def test_mlp_inner_dimension_prunes_through_fused_activation(op: str, bias: bool, attrs: dict[str, float]) -> None:
    inits = {"h.w": w(D, 32), "y.w": w(32, 8)}
    act_in = ["h"]
    if bias:
        inits["b"] = w(32)
        act_in.append("b")
    m = ms_model([matmul("x", "h"), node(op, act_in, ["g"], **attrs), matmul("g", "y")], inits, {"y": [B, S, 8]})
    a = analyze(m)
    g = group_of(a, "h.w", 1)
    assert g.prunable and g.n_units == 32 and ("y.w", 0) in g.members
    assert not bias or ("b", 0) in g.members
    pruned, _, report = prune_checked(m, ratio=0.5)
    assert init_shape(pruned, "h.w") == [D, 16] and init_shape(pruned, "y.w") == [16, 8]
    assert not bias or init_shape(pruned, "b") == [16]
    assert report.groups_pruned == 1


# ---------------------------------------------------------------------------------------------
# SkipLayerNormalization / SkipSimplifiedLayerNormalization
# ---------------------------------------------------------------------------------------------


def skip_ln_model(op: str, stats_out: bool = False) -> onnx.ModelProto:
    """``a = x @ Wa``; ``b = a @ Wb``; ``s = SkipLN(b, a, gamma, [beta,] bias)``; ``y = s @ Wc``."""
    h = 24
    inits = {"a.w": w(D, h), "b.w": w(h, h), "y.w": w(h, 8), "gamma": np.abs(w(h)) + 0.5, "bias": w(h)}
    params = ["gamma", "bias"]
    if op == "SkipLayerNormalization":
        inits["beta"] = w(h)
        params = ["gamma", "beta", "bias"]
    outs = ["s", "mean"] if stats_out else ["s"]
    nodes = [matmul("x", "a"), matmul("a", "b"), node(op, ["b", "a", *params], outs, epsilon=1e-5), matmul("s", "y")]
    outputs = {"y": [B, S, 8], **({"mean": [B, S, 1]} if stats_out else {})}
    return ms_model(nodes, inits, outputs)


@pytest.mark.parametrize("op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_skip_layernorm_hidden_axis_is_opt_in(op: str) -> None:
    m = skip_ln_model(op)
    g = group_of(analyze(m), "a.w", 1)
    assert {("b.w", 0), ("b.w", 1), ("gamma", 0), ("bias", 0), ("y.w", 0)} <= set(g.members)
    assert any(op in r and "--prune-norm-axes" in r for r in g.blocked), g.blocked
    pruned, plan, report = spa.prune(m, ratio=0.5, verify_result=True, selection=Selection(prune_norm_axes=True))
    onnx.checker.check_model(pruned, full_check=True)
    for t in ("gamma", "bias", *(["beta"] if op == "SkipLayerNormalization" else [])):
        assert init_shape(pruned, t) == [12]
    assert init_shape(pruned, "b.w") == [12, 12] and init_shape(pruned, "y.w") == [12, 8]
    assert plan.inexact and report.verification is not None and report.verification.mode == "drift"


def test_skip_layernorm_statistics_output_blocks_even_when_opted_in() -> None:
    m = skip_ln_model("SkipLayerNormalization", stats_out=True)
    g = group_of(analyze(m, prune_norm_axes=True), "a.w", 1)
    assert any("exposes its statistics" in r and "SkipLayerNormalization" in r for r in g.blocked), g.blocked


# ---------------------------------------------------------------------------------------------
# Attention (packed QKV weight)
# ---------------------------------------------------------------------------------------------


def attention_model(qkv: tuple[int, int, int] = (D, D, D), heads: int = 4, **attrs: object) -> onnx.ModelProto:
    """``h = x @ W0``; ``o = Attention(h, Wqkv, bqkv, mask_index)``; ``y = o @ Wo``."""
    q, k, v = qkv
    inits = {"h.w": w(D, D), "qkv.w": w(D, q + k + v) * 0.5, "qkv.b": w(q + k + v), "y.w": w(v, 8)}
    if qkv != (D, D, D):
        attrs["qkv_hidden_sizes"] = list(qkv)
    att = node("Attention", ["h", "qkv.w", "qkv.b", "mask"], ["o"], num_heads=heads, **attrs)
    return ms_model([matmul("x", "h"), att, matmul("o", "y")], inits, {"y": [B, S, 8]},
                    int_inits={"mask": np.array([S, 3], dtype=np.int32)})


@pytest.mark.parametrize("attrs", [{}, {"unidirectional": 1}, {"scale": 0.3}])
def test_attention_prunes_whole_heads(attrs: dict[str, object]) -> None:
    m = attention_model(**attrs)
    g = group_of(analyze(m), "qkv.w", 1)
    assert g.prunable and g.n_units == 4  # one unit per head
    assert {("qkv.b", 0), ("o", 2), ("y.w", 0)} <= set(g.members)
    pruned, _, _ = prune_checked(m, ratio=0.5)
    assert attrs_of(pruned, "Attention")["num_heads"] == 2
    assert init_shape(pruned, "qkv.w") == [8, 24] and init_shape(pruned, "qkv.b") == [24]  # input axis: h.w's group
    assert init_shape(pruned, "y.w") == [8, 8]
    assert "qkv_hidden_sizes" not in attrs_of(pruned, "Attention")
    assert attrs_of(pruned, "Attention").get("scale", 0.0) == pytest.approx(attrs.get("scale", 0.0))


def test_attention_input_axis_is_consumed_like_a_matmul() -> None:
    m = attention_model()
    g = group_of(analyze(m), "h.w", 1)
    assert ("qkv.w", 0) in g.members and g.prunable
    pruned, _, _ = prune_checked(m, ratio=0.5)
    assert init_shape(pruned, "qkv.w")[0] == 8


def test_attention_with_narrower_values_rewrites_qkv_hidden_sizes() -> None:
    m = attention_model(qkv=(D, D, 8))
    pruned, _, _ = prune_checked(m, ratio=0.5)
    a = attrs_of(pruned, "Attention")
    assert a["num_heads"] == 2 and list(a["qkv_hidden_sizes"]) == [8, 8, 4]  # type: ignore[call-overload]
    assert init_shape(pruned, "qkv.w") == [8, 20] and init_shape(pruned, "y.w") == [4, 8]


def test_attention_head_dims_mode_keeps_heads_and_pins_the_scale() -> None:
    m = attention_model()
    pruned, plan, _ = spa.prune(m, ratio=0.5, selection=Selection(prune_heads="dims"))
    onnx.checker.check_model(pruned, full_check=True)
    a = attrs_of(pruned, "Attention")
    cols = next(np.asarray(s.keep) for s in plan.slices if (s.initializer, s.axis) == ("qkv.w", 1))
    nq, nk, nv = (int(np.count_nonzero((cols >= lo) & (cols < lo + D))) for lo in (0, D, 2 * D))
    assert a["num_heads"] == 4 and a["scale"] == pytest.approx(0.5)  # 1/sqrt(original head width 4)
    assert nq == nk and nq % 4 == 0 and nv % 4 == 0 and nq + nv < 2 * D  # the same dims go from every head
    assert list(a.get("qkv_hidden_sizes", [nq, nk, nv])) == [nq, nk, nv]  # type: ignore[call-overload]
    assert init_shape(pruned, "y.w")[0] == nv
    assert_masked_equivalent(m, pruned, plan)


def test_attention_heads_left_alone_in_none_mode() -> None:
    g = group_of(analyze(attention_model(), prune_heads="none"), "o", 2)
    assert any("head granularity 'none'" in r for r in g.blocked), g.blocked


def test_attention_with_kv_cache_is_blocked() -> None:
    inits = {"qkv.w": w(D, 3 * D), "qkv.b": w(3 * D), "y.w": w(D, 8)}
    att = node("Attention", ["x", "qkv.w", "qkv.b", "", "past"], ["o", "present"], num_heads=4)
    m = ms_model([att, matmul("o", "y")], inits, {"y": [B, S, 8], "present": [2, B, 4, S + 3, 4]},
                 inputs={"x": [B, S, D], "past": [2, B, 4, 3, 4]})
    g = group_of(analyze(m), "o", 2)
    assert any("KV cache" in r and "Attention" in r for r in g.blocked), g.blocked


def test_attention_with_computed_weight_is_blocked() -> None:
    att = node("Attention", ["x", "wqkv", "qkv.b"], ["o"], num_heads=4)
    m = ms_model([att, matmul("o", "y")], {"qkv.b": w(3 * D), "y.w": w(D, 8)}, {"y": [B, S, 8]},
                 inputs={"x": [B, S, D], "wqkv": [D, 3 * D]})
    g = group_of(analyze(m), "y.w", 0)
    assert any("'wqkv' is not a constant" in r for r in g.blocked), g.blocked


# ---------------------------------------------------------------------------------------------
# MultiHeadAttention, RotaryEmbedding, FusedMatMul
# ---------------------------------------------------------------------------------------------


def test_multihead_attention_prunes_whole_heads_of_separate_projections() -> None:
    inits = {"q.w": w(D, D), "k.w": w(D, D), "v.w": w(D, D), "mha.b": w(3 * D), "y.w": w(D, 8)}
    mha = node("MultiHeadAttention", ["q", "k", "v", "mha.b"], ["o"], num_heads=4)
    m = ms_model([matmul("x", "q"), matmul("x", "k"), matmul("x", "v"), mha, matmul("o", "y")], inits, {"y": [B, S, 8]})
    g = group_of(analyze(m), "q.w", 1)
    assert g.prunable and g.n_units == 4 and {("k.w", 1), ("v.w", 1), ("mha.b", 0), ("y.w", 0)} <= set(g.members)
    pruned, _, _ = prune_checked(m, ratio=0.5)
    assert attrs_of(pruned, "MultiHeadAttention")["num_heads"] == 2
    assert [init_shape(pruned, t) for t in ("q.w", "k.w", "v.w", "mha.b", "y.w")] == [[D, 8]] * 3 + [[24], [8, 8]]


@pytest.mark.parametrize("num_heads", [4, 0])
def test_rotary_embedding_keeps_whole_heads(num_heads: int) -> None:
    pos = np.tile(np.arange(S, dtype=np.int64), (B, 1))
    angles = np.arange(S + 3)[:, None] * np.array([1.0, 0.1])[None, :]
    rot_attrs = {"num_heads": num_heads} if num_heads else {}
    rot = node("RotaryEmbedding", ["q", "pos", "cos", "sin"], ["r"], **rot_attrs)
    m = ms_model([matmul("x", "q"), rot, matmul("r", "y")],
                 {"q.w": w(D, D), "y.w": w(D, 8), "cos": np.cos(angles).astype(np.float32),
                  "sin": np.sin(angles).astype(np.float32)}, {"y": [B, S, 8]}, int_inits={"pos": pos})
    g = group_of(analyze(m), "q.w", 1)
    assert g.prunable and g.n_units == 4
    pruned, _, _ = prune_checked(m, ratio=0.5)
    assert init_shape(pruned, "q.w") == [D, 8]
    assert attrs_of(pruned, "RotaryEmbedding").get("num_heads", 0) == (2 if num_heads else 0)


def test_rotary_embedding_refuses_head_dims() -> None:
    pos = np.tile(np.arange(S, dtype=np.int64), (B, 1))
    rot = node("RotaryEmbedding", ["q", "pos", "cos", "sin"], ["r"], num_heads=4)
    m = ms_model([matmul("x", "q"), rot, matmul("r", "y")],
                 {"q.w": w(D, D), "y.w": w(D, 8), "cos": np.ones((8, 2), np.float32), "sin": np.zeros((8, 2),
                  np.float32)},
                 {"y": [B, S, 8]}, int_inits={"pos": pos})
    pruned, _, _ = spa.prune(m, ratio=0.5, selection=Selection(prune_heads="whole"))  # whole heads go
    assert init_shape(pruned, "q.w") == [D, 8]
    g = group_of(analyze(m, prune_heads="dims"), "q.w", 1)
    assert any("rotates pairs" in r and "RotaryEmbedding" in r for r in g.blocked), g.blocked


def test_fused_matmul_prunes_like_matmul() -> None:
    inits = {"h.w": w(D, 32), "y.w": w(8, 32)}
    nodes = [node("FusedMatMul", ["x", "h.w"], ["h"], alpha=0.5), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             node("FusedMatMul", ["r", "y.w"], ["y"], transB=1)]
    m = ms_model(nodes, inits, {"y": [B, S, 8]})
    pruned, _, _ = prune_checked(m, ratio=0.5)
    assert init_shape(pruned, "h.w") == [D, 16] and init_shape(pruned, "y.w") == [8, 16]


def test_fused_matmul_with_transposed_activation_is_blocked() -> None:
    nodes = [helper.make_node("MatMul", ["x", "h.w"], ["h"], name="h"),
             node("FusedMatMul", ["h", "y.w"], ["y"], transA=1)]
    m = ms_model(nodes, {"h.w": w(D, D), "y.w": w(S, 8)}, {"y": [B, D, 8]})
    g = group_of(analyze(m), "h.w", 1)
    assert any("transposes its activation input" in r for r in g.blocked), g.blocked


def test_group_query_attention_is_refused_with_its_reason() -> None:
    gqa = node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens", "total"], ["o"], num_heads=4, kv_num_heads=2)
    m = ms_model([matmul("x", "q"), matmul("x", "k"), matmul("x", "v"), gqa, matmul("o", "y")],
                 {"q.w": w(D, D), "k.w": w(D, 8), "v.w": w(D, 8), "y.w": w(D, 8)}, {"y": [B, S, 8]},
                 int_inits={"seqlens": np.array([S - 1, S - 1], np.int32), "total": np.array(S, np.int32)})
    g = group_of(analyze(m), "q.w", 1)
    assert any("GroupQueryAttention" in r and "kv_num_heads" in r for r in g.blocked), g.blocked


# ---------------------------------------------------------------------------------------------
# the onnxruntime-optimised zoo files
# ---------------------------------------------------------------------------------------------


def _assert_masked_equivalent_on(name: str, original: onnx.ModelProto, pruned: onnx.ModelProto, plan: spa.Plan) -> None:
    x = feeds(SPECS[name.split(".")[0]], batch=2, seq=5, seed=4)
    want, got = run(mask_model(original, plan), x), run(pruned, x)
    for a, b in zip(want, got):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 + 1e-4 * float(np.abs(a).max()))


def test_bert_ortopt_prunes_fused_attention_heads_and_mlp() -> None:
    original = spa.load_model(HF / "hf_bert.ortopt.onnx")
    ops = {n.op_type for n in original.graph.node if n.domain == MS}
    assert {"Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu"} <= ops
    pruned, plan, report = spa.prune(original, ratio=0.5)
    onnx.checker.check_model(pruned, full_check=True)
    heads = [helper.get_attribute_value(a) for n in pruned.graph.node if n.op_type == "Attention"
             for a in n.attribute if a.name == "num_heads"]
    assert heads == [2, 2]
    assert report.groups_pruned >= 5  # 2 x heads, 2 x MLP through BiasGelu, pooler
    _assert_masked_equivalent_on("hf_bert.ortopt.onnx", original, pruned, plan)
    hidden = next(g for g in report.blocked if "EmbedLayerNormalization" in g.reason)
    assert "--prune-norm-axes" in hidden.reason


def test_bert_ortopt_hidden_dimension_when_opted_in() -> None:
    original = spa.load_model(HF / "hf_bert.ortopt.onnx")
    pruned, plan, _ = spa.prune(original, ratio=0.5, selection=Selection(prune_norm_axes=True))
    onnx.checker.check_model(pruned, full_check=True)
    assert init_shape(pruned, "inner.bert.embeddings.word_embeddings.weight") == [100, 32]
    x = feeds(SPECS["hf_bert"], batch=2, seq=5)
    assert [r.shape for r in run(pruned, x)] == [r.shape for r in run(original, x)]
    assert plan.inexact


def test_gpt2_ortopt_mlp_prunes_through_fastgelu() -> None:
    original = spa.load_model(HF / "hf_gpt2.ortopt.onnx")
    pruned, plan, _ = spa.prune(original, ratio=0.5)
    onnx.checker.check_model(pruned, full_check=True)
    assert init_shape(pruned, "inner.transformer.h.0.mlp.c_fc.weight") == [64, 128]
    assert init_shape(pruned, "inner.transformer.h.0.mlp.c_fc.bias") == [128]
    _assert_masked_equivalent_on("hf_gpt2.ortopt.onnx", original, pruned, plan)
