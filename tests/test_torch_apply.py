"""spa.torch.apply_plan: a plan applied to the torch module reproduces the pruned ONNX model.

Real exports with both torch exporters (skipped without torch).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from torch import nn  # noqa: E402

import spa  # noqa: E402
import spa.torch  # noqa: E402
from spa.errors import PlanError  # noqa: E402
from spa.planning.plan import SliceEntry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``exported(name, exporter)``: the path of a fresh export of a ZOO model (cached)."""
    from models.build_zoo import export_to

    cache: dict[tuple[str, str], Path] = {}
    folder = tmp_path_factory.mktemp("exports")

    def get(name: str, exporter: str) -> Path:
        if (name, exporter) not in cache:
            path = folder / f"{name}.{exporter}.onnx"
            export_to(name, path, exporter=exporter)  # type: ignore[arg-type]
            cache[(name, exporter)] = path
        return cache[(name, exporter)]

    return get


def fresh(name: str) -> nn.Module:
    """A new instance of the ZOO model: its builder is seeded, so the weights are the exported ones."""
    from models.zoo import ZOO

    return ZOO[name]()


def x_input(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, 32, 32)).astype(np.float32)


def ort_out(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def torch_out(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def assert_consistent(module: nn.Module) -> None:
    """Every layer's attributes describe its (sliced) tensors."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            assert m.out_channels == m.weight.shape[0] and m.in_channels == m.weight.shape[1] * m.groups, name
            assert m.out_channels % m.groups == 0, name
        elif isinstance(m, nn.BatchNorm2d):
            assert m.num_features == m.weight.shape[0] == m.running_var.shape[0], name
        elif isinstance(m, nn.Linear):
            assert (m.out_features, m.in_features) == tuple(m.weight.shape), name


# ---- 1. the torch module computes what the pruned ONNX model computes -------------------------

@pytest.mark.parametrize(("name", "exporter"), [
    ("resnet_basic", "ts"), ("resnet_basic", "dynamo"),
    ("mobilenetv2", "ts"), ("mobilenetv2", "dynamo"),  # depthwise: groups follow the channels
    ("resnext", "ts"),  # grouped 3x3: whole conv groups go
    ("vgg_bn", "ts"), ("se_block", "dynamo"),
])
def test_sliced_module_matches_pruned_onnx(exported: Callable[[str, str], Path], name: str, exporter: str) -> None:
    pruned, plan, _ = spa.prune(exported(name, exporter), ratio=0.5, criterion="l1")
    module = fresh(name)
    groups_before = {n: m.groups for n, m in module.named_modules() if isinstance(m, nn.Conv2d)}
    assert spa.torch.apply_plan(module, plan) is module
    assert_consistent(module)
    state = module.state_dict()
    for s in plan.slices:  # every planned tensor has its new size
        assert state[s.initializer].shape[s.axis] == len(s.keep), s.initializer
    if name in ("mobilenetv2", "resnext"):
        assert any(m.groups != groups_before[n] for n, m in module.named_modules() if isinstance(m, nn.Conv2d))
    x = x_input()
    np.testing.assert_allclose(torch_out(module, x), ort_out(pruned, x), atol=1e-4, rtol=0)


# ---- 2. the pruned module exports again to SPA's pruned model ---------------------------------

def weights_by_role(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers keyed by name, except a bias SPA added (``…__spa_bias``): keyed as the torch
    bias of the layer whose weight it sits next to, which is what a re-export calls it."""
    out = {}
    by_bias = {n.input[2]: n.input[1] for n in model.graph.node if len(n.input) > 2 and n.input[2]}
    for init in model.graph.initializer:
        name = init.name
        if name.endswith("__spa_bias"):
            name = by_bias[name].rsplit(".", 1)[0] + ".bias"
        out[name] = numpy_helper.to_array(init)
    return out


@pytest.mark.parametrize(("name", "criterion"), [
    ("resnet_basic", "l1"), ("mobilenetv2", "l1"), ("resnext", "l1"), ("resnet_basic", "obspa"),
])
def test_pruned_module_reexports_to_the_same_weights(exported: Callable[[str, str], Path], tmp_path: Path,
                                                     name: str, criterion: str) -> None:
    from models.build_zoo import export_to

    pruned, plan, _ = spa.prune(exported(name, "ts"), ratio=0.5, criterion=criterion)
    module = spa.torch.apply_plan(fresh(name), plan, weights_from=pruned)
    out = tmp_path / "again.onnx"
    export_to(module, out, exporter="ts")
    again = onnx.load(str(out))
    want, got = weights_by_role(pruned), weights_by_role(again)
    if criterion == "l1":  # same names exactly, no added biases
        assert {i.name for i in again.graph.initializer} == {i.name for i in pruned.graph.initializer}
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    x = x_input(1)
    np.testing.assert_allclose(ort_out(again, x), ort_out(pruned, x), atol=1e-5, rtol=0)


# ---- 3. compensated plans need weights_from ----------------------------------------------------

@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_compensated_plan_with_weights_from(exported: Callable[[str, str], Path], tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture, exporter: str) -> None:
    pruned, plan, _ = spa.prune(exported("resnet_basic", exporter), ratio=0.5, criterion="obspa")
    assert plan.compensated
    x = x_input(2)
    want = ort_out(pruned, x)
    source: onnx.ModelProto | str = pruned
    if exporter == "dynamo":  # also as a path
        spa.save_model(pruned, tmp_path / "small.onnx")
        source = str(tmp_path / "small.onnx")
    with caplog.at_level(logging.WARNING, logger="spa.torch"):
        module = spa.torch.apply_plan(fresh("resnet_basic"), plan, weights_from=source)
    assert not [r for r in caplog.records if r.name == "spa.torch"]
    np.testing.assert_allclose(torch_out(module, x), want, atol=1e-4, rtol=0)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spa.torch"):
        sliced_only = spa.torch.apply_plan(fresh("resnet_basic"), plan)
    assert any("weights_from" in r.getMessage() for r in caplog.records if r.name == "spa.torch")
    assert shapes(sliced_only).items() <= shapes(module).items()  # same slicing, fewer biases at most
    assert np.max(np.abs(torch_out(sliced_only, x) - want)) > 1e-3


def test_weights_from_must_be_the_pruned_model(exported: Callable[[str, str], Path]) -> None:
    path = exported("resnet_basic", "ts")
    _, plan, _ = spa.prune(path, ratio=0.5, criterion="l1")
    module = fresh("resnet_basic")
    before = shapes(module)
    with pytest.raises(PlanError, match="weights_from: .* has shape"):
        spa.torch.apply_plan(module, plan, weights_from=str(path))  # the original, unpruned
    assert shapes(module) == before


# ---- 4. names and sizes that do not fit -------------------------------------------------------

def test_unknown_names(exported: Callable[[str, str], Path], caplog: pytest.LogCaptureFixture) -> None:
    pruned, plan, _ = spa.prune(exported("resnet_basic", "ts"), ratio=0.5, criterion="l1")
    plan.slices.append(SliceEntry("head.proj.weight", 0, 4, [0, 1]))
    module = fresh("resnet_basic")
    before = shapes(module)
    with pytest.raises(PlanError, match=r"'head\.proj\.weight'.*do_constant_folding=False.*dynamo"):
        spa.torch.apply_plan(module, plan)
    assert shapes(module) == before  # nothing changed

    with caplog.at_level(logging.WARNING, logger="spa.torch"):
        spa.torch.apply_plan(module, plan, strict=False)
    assert any("head.proj.weight" in r.getMessage() for r in caplog.records)
    x = x_input()
    np.testing.assert_allclose(torch_out(module, x), ort_out(pruned, x), atol=1e-4, rtol=0)


def test_constant_folded_export_names_nothing_the_module_has(tmp_path: Path) -> None:
    model = fresh("vgg_bn")
    path = tmp_path / "folded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, do_constant_folding=True)
    _, plan, _ = spa.prune(path, ratio=0.5, criterion="l1")
    with pytest.raises(PlanError, match="not parameters or buffers of the module") as info:
        spa.torch.apply_plan(model, plan)
    assert "TorchScript exporter with do_constant_folding=False" in str(info.value)


def test_wrapped_module_gets_a_hint(exported: Callable[[str, str], Path]) -> None:
    _, plan, _ = spa.prune(exported("resnet_basic", "ts"), ratio=0.5, criterion="l1")
    wrapper = nn.Sequential()
    wrapper.add_module("net", fresh("resnet_basic"))
    with pytest.raises(PlanError, match=r"pass the inner module \(net\)"):
        spa.torch.apply_plan(wrapper, plan)


def test_size_mismatch(exported: Callable[[str, str], Path]) -> None:
    _, plan, _ = spa.prune(exported("resnet_basic", "ts"), ratio=0.5, criterion="l1")
    module = spa.torch.apply_plan(fresh("resnet_basic"), plan)
    before = shapes(module)
    first = plan.slices[0]
    with pytest.raises(PlanError, match=rf"'{re.escape(first.initializer)}' axis {first.axis} has size "
                                        rf"{first.size}; the module's tensor has {len(first.keep)}"):
        spa.torch.apply_plan(module, plan)  # already pruned
    assert shapes(module) == before


def test_groupnorm_is_refused() -> None:
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8))
    plan = spa.Plan(model="m", criterion="l1", ratio=0.5, slices=[
        SliceEntry("0.weight", 0, 8, [0, 1, 2, 3]), SliceEntry("0.bias", 0, 8, [0, 1, 2, 3]),
        SliceEntry("1.weight", 0, 8, [0, 1, 2, 3]), SliceEntry("1.bias", 0, 8, [0, 1, 2, 3]),
    ])
    with pytest.raises(PlanError, match="GroupNorm"):
        spa.torch.apply_plan(module, plan)
    assert module[0].weight.shape[0] == 8


def test_unequal_conv_groups_are_refused() -> None:
    module = nn.Sequential(nn.Conv2d(8, 8, 3, groups=4))
    plan = spa.Plan(model="m", criterion="l1", ratio=0.5, slices=[SliceEntry("0.weight", 0, 8, [0, 1, 2])])
    with pytest.raises(PlanError, match="unequal numbers of channels"):
        spa.torch.apply_plan(module, plan)


def test_tied_tensors_and_layer_attributes() -> None:
    """A tensor held under two names is sliced once; PReLU, LayerNorm and ConvTranspose follow."""
    lin = nn.Linear(6, 4)
    module = nn.ModuleDict({"a": lin, "b": lin, "act": nn.PReLU(4), "norm": nn.LayerNorm(4),
                            "up": nn.ConvTranspose2d(8, 4, 2, groups=2)})
    keep = [0, 2]
    plan = spa.Plan(model="m", criterion="l1", ratio=0.5, slices=[
        SliceEntry("a.weight", 0, 4, keep), SliceEntry("b.weight", 0, 4, keep), SliceEntry("a.bias", 0, 4, keep),
        SliceEntry("act.weight", 0, 4, keep), SliceEntry("norm.weight", 0, 4, keep),
        SliceEntry("norm.bias", 0, 4, keep), SliceEntry("up.weight", 0, 8, [4, 5, 6, 7]),
        SliceEntry("up.bias", 0, 4, [2, 3]),  # the second conv group's outputs
    ])
    spa.torch.apply_plan(module, plan)
    assert module["a"] is module["b"] and module["a"].weight.shape == (2, 6) and module["a"].out_features == 2
    assert module["act"].num_parameters == 2 and module["norm"].normalized_shape == (2,)
    up = module["up"]
    assert (up.in_channels, up.out_channels, up.groups) == (4, 2, 1) and up.weight.shape == (4, 2, 2, 2)
    up(torch.randn(1, 4, 5, 5))


# ---- 5. fine-tuning works --------------------------------------------------------------------

def test_fine_tune_after_apply(exported: Callable[[str, str], Path]) -> None:
    _, plan, _ = spa.prune(exported("resnet_basic", "ts"), ratio=0.5, criterion="l1")
    module = fresh("resnet_basic")
    grads = {k: p.requires_grad for k, p in module.named_parameters()}
    spa.torch.apply_plan(module, plan)
    assert {k: p.requires_grad for k, p in module.named_parameters()} == grads
    assert all(isinstance(p, nn.Parameter) for p in module.parameters())
    assert "bn1.running_var" in dict(module.named_buffers()) and "bn1.running_var" in module.state_dict()

    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    losses = []
    for _ in range(2):
        loss = nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[1] != losses[0]
    assert module.layer1[0].conv1.weight.grad is not None


def test_import_spa_alone_does_not_import_torch() -> None:
    code = "import sys, spa; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Back to PyTorch", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert code is not None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code.group(1) + "\nassert loss.item() > 0\n"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
