"""Low-precision weights: float16 models and bfloat16 weights cast to float (as LLM exports store
them) prune exactly, and magnitude criteria score the bfloat16 values (they used to score 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from modelkit import assert_masked_equivalent
from onnx import TensorProto, helper, numpy_helper

import spa
from spa.criteria import get_criterion

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


def _bf16_weights() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The same model twice: bfloat16 weights behind Casts, and float32 weights of those values."""
    import ml_dtypes

    src = spa.load_model(ZOO / "defaults" / "resnet_basic.ts.onnx")
    bf, fp = onnx.ModelProto(), onnx.ModelProto()
    bf.CopyFrom(src)
    fp.CopyFrom(src)
    casts = []
    for t_bf, t_fp in zip(bf.graph.initializer, fp.graph.initializer):
        if t_bf.data_type != TensorProto.FLOAT or not t_bf.dims:
            continue
        rounded = numpy_helper.to_array(t_bf).astype(ml_dtypes.bfloat16)
        t_fp.CopyFrom(numpy_helper.from_array(rounded.astype(np.float32), t_fp.name))
        name = t_bf.name
        t_bf.CopyFrom(numpy_helper.from_array(rounded, f"{name}_bf16"))
        casts.append(helper.make_node("Cast", [f"{name}_bf16"], [name], to=TensorProto.FLOAT, name=f"cast_{name}"))
    for k, c in enumerate(casts):
        bf.graph.node.insert(k, c)
    onnx.checker.check_model(bf, full_check=True)
    return bf, fp


def test_bfloat16_weights_are_scored_by_their_values_and_prune_exactly() -> None:
    bf, fp = _bf16_weights()
    a_bf, a_fp = spa.analyze(bf), spa.analyze(fp)
    l1 = get_criterion("l1")
    assert len(a_bf.prunable) == len(a_fp.prunable) >= 5
    for g_fp in a_fp.prunable:
        activation = next(m for m in g_fp.members if m[0] not in a_fp.ctx.initializers)  # same name in both
        g_bf = next(g for g in a_bf.prunable if activation in g.members)
        s_bf, s_fp = l1.score(g_bf, a_bf.ctx), l1.score(g_fp, a_fp.ctx)
        assert s_bf.max() > 0
        np.testing.assert_allclose(s_bf, s_fp, rtol=1e-6)
    pruned, plan, report = spa.prune(bf, ratio=0.4, criterion="l1", round_to=1)
    assert report.after.params < report.before.params
    types = {t.name: t.data_type for t in pruned.graph.initializer}
    assert types["onnx::Conv_100_bf16"] == TensorProto.BFLOAT16
    assert_masked_equivalent(bf, pruned, plan)


def test_float16_model_prunes_exactly() -> None:
    m = spa.load_model(ZOO / "defaults" / "resnet_basic.ts.onnx")
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in (*m.graph.input, *m.graph.output):
        v.type.tensor_type.elem_type = TensorProto.FLOAT16
    pruned, plan, report = spa.prune(m, ratio=0.4, criterion="l1", round_to=1)
    onnx.checker.check_model(pruned, full_check=True)
    assert report.groups_pruned >= 5
    v = spa.verify_models(m, pruned, plan)
    assert v.passed and v.mode == "masked-equivalence"
