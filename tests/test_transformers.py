"""Transformers written with torch.nn (``models/transformers_nn.py``), both torch exporters.

Every file prunes at two ratios with whole-head granularity, passes the checker and onnxruntime,
and equals the original with the removed heads and hidden units masked, on a sequence longer
than one token (so attention mixes positions). BERT and LLaMA lose at least 30% of their MACs at
ratio 0.4 (LLaMA with its RMSNorm axes opted in: ``--prune-norm-axes``, checked for drift).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import mask_model, run

import spa
from spa.model.runtime import input_specs
from spa.records import Selection

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo" / "transformers"
MODELS = sorted(p.name for p in ZOO.glob("*.onnx"))


def _feeds(m: onnx.ModelProto, seq: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    feeds = {}
    for name, dims, et in input_specs(m):
        if et == onnx.TensorProto.INT64:
            feeds[name] = rng.integers(0, 90, size=(2, seq)).astype(np.int64)
        else:
            feeds[name] = rng.standard_normal([2 if not isinstance(d, int) else d for d in dims]).astype(np.float32)
    return feeds


def _assert_masked(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: spa.Plan) -> None:
    feeds = _feeds(original)
    for r, g in zip(run(mask_model(original, plan), feeds), run(pruned, feeds)):
        assert r.shape == g.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 + 1e-4 * float(np.abs(r).max()))


def test_transformer_zoo_is_complete() -> None:
    names = {m.split(".")[0] for m in MODELS}
    assert names == {"bert_nn", "gpt_nn", "llama_nn", "vit_nn"}
    assert all(f"{n}.{e}.onnx" in MODELS for n in names for e in ("ts", "dynamo"))


# Every file here at ratios 0.3 and 0.6 (checker, onnxruntime, masked equivalence on 5-token inputs)
# is a row of docs/coverage.md, recomputed by tests/test_coverage.py.
@pytest.mark.parametrize("name", ["llama_nn.ts.onnx", "vit_nn.dynamo.onnx"])
def test_prune_heads_and_mlp(name: str) -> None:
    original = spa.load_model(ZOO / name)
    pruned, plan, report = spa.prune(original, ratio=0.6)
    onnx.checker.check_model(pruned, full_check=True)
    assert report.after.macs < report.before.macs
    assert plan.options["heads"] == "whole"
    _assert_masked(original, pruned, plan)


@pytest.mark.parametrize("name", [m for m in MODELS if not m.startswith("llama")])
def test_whole_heads_are_removed(name: str) -> None:
    """Every head-carrying Reshape target loses its head count; the head width stays 16."""
    a = spa.analyze(ZOO / name)
    head_groups = [g for g in a.prunable if g.n_units == 4]
    assert len(head_groups) == 2, [(g.n_units, g.blocked) for g in a.groups]  # one per layer
    pruned, plan, _ = spa.prune(ZOO / name, ratio=0.5)
    q = next(s for s in plan.slices if s.initializer.endswith(("attn.0.q.weight", "attn.0.qkv.weight",
                                                                 "attn.0.in_proj_weight")))
    assert len(q.keep) % 16 == 0 and len(q.keep) < q.size


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_gqa_kv_head_and_its_query_heads_are_one_unit(exporter: str) -> None:
    a = spa.analyze(ZOO / f"llama_nn.{exporter}.onnx")
    kv = [g for g in a.prunable if any(t.endswith("attn.0.k.weight") for t, _ in g.members)]
    assert len(kv) == 1 and kv[0].n_units == 2  # 2 KV heads, each with its 2 query heads
    q_members = [m for m in kv[0].members if m[0].endswith("attn.0.q.weight")]
    assert q_members and len(kv[0].kept_indices(q_members[0], np.array([1]))) == 32  # query heads 2 and 3
    pruned, plan, _ = spa.prune(ZOO / f"llama_nn.{exporter}.onnx", ratio=0.5)
    _assert_masked(spa.load_model(ZOO / f"llama_nn.{exporter}.onnx"), pruned, plan)


@pytest.mark.parametrize("name", ["bert_nn.ts.onnx", "bert_nn.dynamo.onnx", "gpt_nn.dynamo.onnx"])
def test_head_dims_granularity(name: str) -> None:
    pruned, plan, report = spa.prune(ZOO / name, ratio=0.4, selection=Selection(prune_heads="dims"))
    assert plan.options["heads"] == "dims"
    assert report.after.macs < report.before.macs
    _assert_masked(spa.load_model(ZOO / name), pruned, plan)
    replayed, _, _ = spa.prune(ZOO / name, from_plan=plan)
    assert [t.dims for t in replayed.graph.initializer] == [t.dims for t in pruned.graph.initializer]


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_head_dims_with_rotary_embeddings(exporter: str) -> None:
    """LLaMA's rotate_half: a head-dim unit is the rotation pair (i, i + 8) of Q and K, with the inv_freq
    entry it reads (a Constant lifted to an initializer in TorchScript, a Range of literals in dynamo)."""
    name = f"llama_nn.{exporter}.onnx"
    a = spa.analyze(ZOO / name, prune_heads="dims")
    qk = [g for g in a.groups if any(t.endswith("attn.0.q.weight") and ax == 0 for t, ax in g.members)]
    assert len(qk) == 1 and qk[0].prunable and qk[0].n_units == 8, [g.blocked for g in qk]
    pruned, plan, report = spa.prune(ZOO / name, ratio=0.4, selection=Selection(prune_heads="dims"))
    keep = next(s.keep for s in plan.slices if s.initializer.endswith("attn.0.q.weight") and s.axis == 0)
    assert [i + 8 for i in keep if i % 16 < 8] == [i for i in keep if i % 16 >= 8]
    assert report.groups_pruned == report.groups_prunable
    _assert_masked(spa.load_model(ZOO / name), pruned, plan)  # 5 positions: the rotation is not the identity


def test_heads_none_keeps_attention() -> None:
    a = spa.analyze(ZOO / "gpt_nn.ts.onnx", prune_heads="none")
    assert any("--prune-heads none" in r for g in a.groups for r in g.blocked)
    assert not any(g.n_units == 4 and g.prunable for g in a.groups)


def test_head_width_read_into_arithmetic_blocks_dims() -> None:
    """nn.MultiheadAttention (TorchScript) computes the scale from the head width at run time."""
    a = spa.analyze(ZOO / "vit_nn.ts.onnx", prune_heads="dims")
    assert any("is read at run time by" in r for g in a.groups for r in g.blocked)


@pytest.mark.parametrize("name,norm_axes,heads", [
    ("bert_nn.ts.onnx", False, "whole"), ("bert_nn.dynamo.onnx", False, "whole"),
    ("llama_nn.ts.onnx", True, "whole"), ("llama_nn.dynamo.onnx", True, "whole"),
    # exact: 2 KV heads lose no whole head at 0.4, but the same dims of every head (rotation pairs) go
    ("llama_nn.ts.onnx", False, "dims"), ("llama_nn.dynamo.onnx", False, "dims"),
])
def test_ratio_04_removes_30_percent_of_macs(name: str, norm_axes: bool, heads: str) -> None:
    original = spa.load_model(ZOO / name)
    pruned, plan, report = spa.prune(original, ratio=0.4, verify_result=True,
                                     selection=Selection(prune_norm_axes=norm_axes, prune_heads=heads))
    assert report.after.macs <= 0.7 * report.before.macs
    assert report.verification is not None and report.verification.passed
    if norm_axes:
        assert plan.inexact and any("ReduceMean" in m for m in plan.inexact)  # RMSNorm, decomposed
    else:
        assert not plan.inexact


def test_unknown_head_granularity_is_refused(run_spa) -> None:  # noqa: ANN001 - conftest fixture
    with pytest.raises(spa.errors.InvalidArgumentError, match="--prune-heads"):
        spa.analyze(ZOO / "bert_nn.ts.onnx", prune_heads="heads")
    res = run_spa("prune", ZOO / "bert_nn.ts.onnx", "--prune-heads", "heads", "--dry-run")
    assert res.returncode == 2 and "--prune-heads" in res.stderr and "Traceback" not in res.stderr
