"""ConvNeXt V2's global response normalisation (GRN): ``x·γ·N(x) + β + x`` with
``N(x) = ‖x‖₂ / mean_c ‖x‖₂``. The mean runs over channels, so removing one changes every other
channel's scale: like LayerNorm, the channels GRN spans are pruned only with ``--prune-norm-axes``
(approximate, drift reported), and block with that reason otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import spa
from spa.records import Selection

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def grn_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    from torch import nn

    class GRN(nn.Module):  # channels-last, as in ConvNeXt V2 (timm's GlobalResponseNorm)
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.randn(dim) * 0.1)
            self.beta = nn.Parameter(torch.randn(dim) * 0.1)

        def forward(self, x):  # noqa: ANN001, ANN202
            gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
            nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
            return x + self.gamma * (x * nx) + self.beta

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.fc1, self.grn, self.fc2 = nn.Linear(16, 48), GRN(48), nn.Linear(48, 16)
            self.head = nn.Linear(16, 5)

        def forward(self, x):  # noqa: ANN001, ANN202
            h = self.stem(x).permute(0, 2, 3, 1)
            h = h + self.fc2(self.grn(torch.nn.functional.gelu(self.fc1(h))))
            return self.head(h.mean(dim=(1, 2)))

    torch.manual_seed(0)
    m, x = Block().eval(), torch.randn(2, 3, 8, 8)
    d = tmp_path_factory.mktemp("grn")
    torch.onnx.export(m, (x,), str(d / "ts.onnx"), dynamo=False, opset_version=17, input_names=["input"],
                      do_constant_folding=False)
    torch.onnx.export(m, (x,), str(d / "dynamo.onnx"), dynamo=True, optimize=False, input_names=["input"],
                      external_data=False)
    return {"ts": d / "ts.onnx", "dynamo": d / "dynamo.onnx"}


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_grn_channels_prune_only_with_prune_norm_axes(grn_exports: dict[str, Path], exporter: str) -> None:
    original = spa.load_model(grn_exports[exporter])
    hidden = next(g for g in spa.analyze(original).groups if ("fc1.bias", 0) in g.members)
    assert not hidden.prunable and any("averages over pruned axis" in r for r in hidden.blocked)
    assert next(g for g in spa.analyze(original, prune_norm_axes=True).groups
                if ("fc1.bias", 0) in g.members).prunable
    pruned, plan, report = spa.prune(original, ratio=0.5, criterion="l1", verify_result=True,
                                     selection=Selection(prune_norm_axes=True))
    onnx.checker.check_model(pruned, full_check=True)
    assert plan.inexact and any("ReduceMean" in r for r in plan.inexact)
    assert {t.name: list(t.dims) for t in pruned.graph.initializer}["fc1.bias"] == [24]
    v = report.verification
    assert v is not None and v.mode == "drift" and all(np.isfinite(o.max_abs) for o in v.outputs)


def test_nothing_to_prune_points_at_prune_norm_axes(grn_exports: dict[str, Path], run_spa, tmp_path: Path) -> None:
    """A model whose every group a normalisation blocks (ConvNeXt V2 has LayerNorms and GRNs only)
    says which flag would prune it."""
    import shutil

    src = tmp_path / "block.onnx"
    shutil.copy(grn_exports["ts"], src)
    # --exclude leaves out the stem's channels, the one group no normalisation spans
    code, out, err = run_spa("prune", src, "--ratio", "0.4", "--criterion", "l1", "--exclude", "stem*")
    assert code == 0, err
    assert "nothing to prune" in out + err and "--prune-norm-axes prunes them" in out + err
