"""The Hugging Face ``transformers`` zoo (``models/zoo/hf``), pruned with l1 at ratios 0.3 and 0.6.

Every committed file (BERT, GPT-2, LLaMA, Qwen2, ViT from both torch exporters, and the
onnxruntime-fused BERT, GPT-2 and ViT) must prune without a crash into a model that passes the full
checker, runs in onnxruntime on valid inputs (token ids below the vocabulary size, a padded
attention-mask row, sequence length 5 on the dynamic axis), keeps its output shapes and computes
what the original computes with the removed channels zeroed. Groups SPA cannot prune must be
blocked with a reason that names the op or the tensor. ``MIN_MACS_REMOVED`` holds what works
today as lower bounds: new rules may raise the figures, never lower them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import run

import spa
from spa.check.verify import mask_model
from spa.records import Selection

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from models.transformers_zoo import SPECS, feeds  # noqa: E402  (no torch or transformers needed)

HF = ROOT / "models" / "zoo" / "hf"
HF_DEFAULTS = ROOT / "models" / "zoo" / "defaults" / "hf"  # docs/coverage.md prunes these (tests/test_coverage.py)
MODELS = sorted(p.name for p in HF.glob("*.onnx"))
log = logging.getLogger(__name__)

#: Fraction of the MACs (batch 1, sequence 1) that l1 pruning removes, at least, per ratio.
MIN_MACS_REMOVED: dict[str, dict[float, float]] = {
    "hf_bert.ts.onnx": {0.3: 0.27, 0.6: 0.54},
    "hf_bert.dynamo.onnx": {0.3: 0.27, 0.6: 0.54},
    "hf_bert.ortopt.onnx": {0.3: 0.27, 0.6: 0.54},  # fused Attention counted like the plain exports
    "hf_gpt2.ts.onnx": {0.3: 0.26, 0.6: 0.53},
    "hf_gpt2.dynamo.onnx": {0.3: 0.26, 0.6: 0.53},
    "hf_gpt2.ortopt.onnx": {0.3: 0.26, 0.6: 0.53},
    "hf_llama.ts.onnx": {0.3: 0.18, 0.6: 0.51},
    "hf_llama.dynamo.onnx": {0.3: 0.18, 0.6: 0.51},
    "hf_qwen2.ts.onnx": {0.3: 0.18, 0.6: 0.51},
    "hf_qwen2.dynamo.onnx": {0.3: 0.18, 0.6: 0.51},
    "hf_vit.ts.onnx": {0.3: 0.23, 0.6: 0.46},
    "hf_vit.dynamo.onnx": {0.3: 0.23, 0.6: 0.46},
    "hf_vit.ortopt.onnx": {0.3: 0.23, 0.6: 0.46},
}


def _spec(name: str):  # noqa: ANN202 - models.transformers_zoo.HFSpec
    return SPECS[name.split(".")[0]]


def test_hf_zoo_is_complete() -> None:
    manifest = json.loads((HF / "MANIFEST.json").read_text())
    assert not manifest["failed"], manifest["failed"]
    assert sorted(manifest["files"]) == MODELS
    for stem, spec in SPECS.items():
        assert f"{stem}.ts.onnx" in MODELS and f"{stem}.dynamo.onnx" in MODELS
        if spec.ortopt:
            assert f"{stem}.ortopt.onnx" in MODELS
    assert sorted(MIN_MACS_REMOVED) == MODELS, "every committed file needs its expected figures"
    for name, entry in manifest["files"].items():
        data = (HF / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{name} differs from its MANIFEST entry"
        assert len(data) < 1 << 20, f"{name} is over 1 MiB"
        assert entry["versions"]["transformers"] and entry["max_abs_diff"] < 1e-4


def test_hf_defaults_zoo_is_complete() -> None:
    """``--defaults``: each model from both exporters with their default settings (or the reason an
    export failed, never silently missing), no ortopt variant, every file as its MANIFEST says."""
    manifest = json.loads((HF_DEFAULTS / "MANIFEST.json").read_text())
    assert manifest["settings"] == "exporter defaults" and "--defaults" in manifest["generator"]
    files = sorted(p.name for p in HF_DEFAULTS.glob("*.onnx"))
    assert sorted(manifest["files"]) == files
    failed = set(manifest["failed"])
    assert set(files) | failed == {f"{stem}.{x}.onnx" for stem in SPECS for x in ("ts", "dynamo")}
    assert not set(files) & failed and all(manifest["failed"].values())
    for name, entry in manifest["files"].items():
        data = (HF_DEFAULTS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{name} differs from its MANIFEST entry"
        assert len(data) < 1 << 20, f"{name} is over 1 MiB"
        assert "exporter defaults" in entry["notes"] and entry["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_hf_blocked_groups_name_their_cause(name: str, record_property: pytest.RecordProperty) -> None:
    a = spa.analyze(HF / name)
    blocked = [g for g in a.groups if g.blocked]
    record_property("groups", f"{len(a.groups)} found, {len(a.prunable)} prunable, {len(blocked)} blocked")
    assert a.prunable
    # The logits are the model's interface: their group is always blocked, for that reason.
    assert any("model output 'logits'" in r for g in blocked for r in g.blocked)
    for g in blocked:
        for reason in g.blocked:
            assert "'" in reason, f"reason names no op or tensor: {reason}"


@pytest.mark.parametrize("name", [m for m in MODELS if m.startswith(("hf_llama.", "hf_qwen2.")) and "ortopt" not in m])
def test_hf_gqa_kv_heads_are_units(name: str) -> None:
    """Both exporters: a KV head and the query heads that read it are one prunable unit (TorchScript's
    repeat_kv expands to a target built with Where(Equal(T, -1), 1, T), which must not block)."""
    a = spa.analyze(HF / name)
    for layer in (0, 1):
        k = (f"inner.model.layers.{layer}.self_attn.k_proj.weight", 0)
        g = next(g for g in a.groups if k in g.members)
        assert g.prunable, g.blocked
        assert g.n_units == 2 and (k[0].replace("k_proj", "q_proj"), 0) in g.members


@pytest.mark.parametrize("ratio", [0.3, 0.6])
@pytest.mark.parametrize("name", MODELS)
def test_prune_hf(name: str, ratio: float, record_property: pytest.RecordProperty) -> None:
    original = spa.load_model(HF / name)
    # round_to=1: the floors measure which channels SPA can remove, not a rounding policy
    pruned, plan, report = spa.prune(original, ratio=ratio, criterion="l1", selection=Selection(round_to=1))
    removed = 1 - report.after.macs / report.before.macs
    record_property("pruned/blocked", f"{report.groups_pruned}/{len(report.blocked)}")
    record_property("macs_removed", round(removed, 3))
    log.info("%s @ %.1f: %d groups pruned, %d blocked, %.1f%% MACs removed", name, ratio, report.groups_pruned,
             len(report.blocked), 100 * removed)
    onnx.checker.check_model(pruned, full_check=True)
    assert report.groups_pruned >= 1
    assert plan.slices and all(0 < len(s.keep) < s.size for s in plan.slices)
    assert removed >= MIN_MACS_REMOVED[name][ratio], f"{name} at {ratio}: only {removed:.3f} of the MACs removed"
    x = feeds(_spec(name), batch=2, seq=5, seed=3)
    want, got = run(mask_model(original, plan), x), run(pruned, x)
    assert [w.shape for w in want] == [g.shape for g in got] == [r.shape for r in run(original, x)]
    for w, g in zip(want, got):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 + 1e-4 * float(np.abs(w).max()))
