"""Gradient criteria (taylor, snip, grasp, crop): formulas, zoo models, CLI, errors, accuracy.

The zoo models are randomly initialised, so every zoo test here is also pruning at
initialisation, which is what SNIP, GraSP and CroP are for.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import spa
from spa.criteria import CRITERIA, get_criterion
from spa.errors import InvalidArgumentError

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models" / "zoo"
GRADIENT = ("taylor", "snip", "grasp", "crop")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def labelled(n: int, seed: int = 0, shape: tuple[int, ...] = (3, 32, 32)) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((n, *shape)).astype(np.float32)}, rng.integers(0, 10, n)


def scores(model: onnx.ModelProto | Path, name: str, **kw: object) -> dict[int, np.ndarray]:
    a = spa.analyze(model)
    crit = get_criterion(name, **kw)
    crit.prepare(a.prunable, a.ctx)
    return {g.id: crit.score(g, a.ctx) for g in a.prunable}


def test_registered_and_flagged() -> None:
    for name in GRADIENT:
        assert CRITERIA[name].needs_labels and not CRITERIA[name].compensates


# ---- 1. the formulas, against torch autograd on the source module ------------------------------

def _source() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 5, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(5 * 4 * 4, 7), torch.nn.Tanh(),
        torch.nn.Linear(7, 4)).eval()


def _export(module: torch.nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *shape),), buf, dynamo=False, do_constant_folding=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}})
    return onnx.load_from_string(buf.getvalue())


def _per_unit(a: spa.Analysis, per_weight: dict[str, np.ndarray], absolute: bool) -> dict[int, np.ndarray]:
    """Independent re-statement of the aggregation: sum over every stored member's other axes."""
    out = {}
    for g in a.prunable:
        s = np.zeros(g.n_units)
        for name, axis in g.params(a.ctx):
            t = np.abs(per_weight[name]) if absolute else per_weight[name]
            np.add.at(s, g.unit_of[(name, axis)], t.sum(axis=tuple(i for i in range(t.ndim) if i != axis)))
        out[g.id] = s
    return out


def test_formulas_match_torch_autograd() -> None:
    module = _source()
    model = _export(module, (2, 8, 8))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 2, 8, 8)).astype(np.float32), rng.integers(0, 4, 12)  # one mini-batch
    params = dict(module.named_parameters())
    loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y))
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    dot = sum((g * g.detach()).sum() for g in grads)
    hg = torch.autograd.grad(dot, list(params.values()))
    w = {k: p.detach().double().numpy() for k, p in params.items()}
    wg = {k: w[k] * g.detach().double().numpy() for k, g in zip(params, grads)}
    whg = {k: w[k] * h.double().numpy() for k, h in zip(params, hg)}
    a = spa.analyze(model)
    assert len(a.prunable) == 3
    expected = {
        "snip": _per_unit(a, wg, absolute=True),
        "taylor": {k: v ** 2 for k, v in _per_unit(a, wg, absolute=False).items()},
        "grasp": _per_unit(a, whg, absolute=False),
        "crop": _per_unit(a, whg, absolute=True),
    }
    for name, want in expected.items():
        got = scores(model, name, calib={"input": x}, labels=y)
        for gid in want:
            np.testing.assert_allclose(got[gid], want[gid], rtol=2e-4, atol=1e-9 * np.abs(want[gid]).max(),
                                       err_msg=f"{name} group {gid}")
    # GraSP sums signed terms, CroP their magnitudes: mixed signs make them differ.
    assert any(not np.allclose(expected["grasp"][g], expected["crop"][g]) for g in expected["grasp"])


def test_taylor_averages_squared_minibatch_terms() -> None:
    """Two mini-batches: the score is the sample-weighted mean of the per-batch squares."""
    module = _source()
    model = _export(module, (2, 8, 8))
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 2, 8, 8)).astype(np.float32), rng.integers(0, 4, 40)  # batches of 32 and 8
    a = spa.analyze(model)
    want = {g.id: np.zeros(g.n_units) for g in a.prunable}
    for lo, hi in ((0, 32), (32, 40)):
        module.zero_grad()
        torch.nn.functional.cross_entropy(module(torch.from_numpy(x[lo:hi])), torch.from_numpy(y[lo:hi])).backward()
        wg = {k: (p.detach() * p.grad).double().numpy() for k, p in module.named_parameters()}
        for gid, s in _per_unit(a, wg, absolute=False).items():
            want[gid] += (hi - lo) / 40 * s ** 2
    got = scores(model, "taylor", calib={"input": x}, labels=y)
    for gid in want:
        np.testing.assert_allclose(got[gid], want[gid], rtol=2e-4)


# ---- 2. zoo models: finite, one per unit, deterministic -----------------------------------------

@pytest.mark.parametrize("model", ["resnet_basic.ts", "mobilenetv2.dynamo", "densenet_block.ts", "se_block.dynamo",
                                   "misc_ops.ts"])
def test_zoo_scores_finite_and_deterministic(model: str) -> None:
    calib, labels = labelled(12, seed=3)
    for name in GRADIENT:
        first = scores(ZOO / f"{model}.onnx", name, seed=5, calib=calib, labels=labels)
        again = scores(ZOO / f"{model}.onnx", name, seed=5, calib=calib, labels=labels)
        assert first, model
        for gid, s in first.items():
            assert s.ndim == 1 and np.all(np.isfinite(s)), (name, gid)
            np.testing.assert_array_equal(s, again[gid])
        assert any(np.ptp(s) > 0 for s in first.values()), name  # the scores tell units apart


def test_mse_loss_takes_real_targets() -> None:
    calib, _ = labelled(8, seed=4)
    targets = np.random.default_rng(5).standard_normal((8, 10)).astype(np.float32)
    mse = scores(ZOO / "vgg_bn.ts.onnx", "snip", calib=calib, labels=targets, loss="mse")
    ce = scores(ZOO / "vgg_bn.ts.onnx", "snip", calib=calib, labels=np.arange(8) % 10)
    assert all(np.all(np.isfinite(s)) for s in mse.values())
    assert any(not np.allclose(mse[g], ce[g]) for g in mse)


# ---- 3. errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    ({}, "needs labelled data: --calib DATA.npz"),
    ({"calib": labelled(4)[0]}, "needs targets: the --calib data must also hold a 'labels' array"),
    ({"calib": labelled(4)[0], "labels": np.zeros(3, np.int64)}, "3 targets for \\[4\\] input samples"),
    ({"calib": labelled(4)[0], "labels": np.zeros(4, np.float32)}, "needs integer class indices"),
    ({"calib": labelled(4)[0], "labels": np.full(4, 10)}, "class indices in \\[0, 10\\)"),
    ({"calib": labelled(4)[0], "labels": np.zeros((4, 3), np.float32), "loss": "mse"}, "they must match"),
    ({"calib": labelled(4)[0], "labels": np.zeros(4, np.int64), "loss": "hinge"}, "--loss must be one of"),
])
def test_bad_data_is_a_user_error(kw: dict, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        spa.prune(ZOO / "resnet_basic.ts.onnx", 0.4, "snip", **kw)


def test_cli_errors_are_one_line(tmp_path: Path, run_spa) -> None:
    x, _ = labelled(4)
    np.savez(tmp_path / "inputs.npz", **x)
    np.savez(tmp_path / "both.npz", **x, labels=np.zeros(4, np.int64), targets=np.zeros(4, np.int64))
    for extra, text in (([], "needs labelled data"), (["--calib", tmp_path / "inputs.npz"], "needs targets"),
                        (["--calib", tmp_path / "both.npz"], "holds both labels and targets")):
        r = run_spa("prune", ZOO / "resnet_basic.ts.onnx", "--criterion", "taylor", "-o", tmp_path / "o.onnx", *extra)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("spa: error:") and text in r.stderr.splitlines()[0], r.stderr
        assert not (tmp_path / "o.onnx").exists()


# ---- 4. the CLI end to end: checker and masked equivalence --------------------------------------

@pytest.mark.parametrize("name,model", [("taylor", "resnet_basic.ts"), ("snip", "mobilenetv2.dynamo"),
                                        ("grasp", "densenet_block.ts"), ("crop", "vgg_bn.dynamo")])
def test_cli_prune_checks_and_verifies(name: str, model: str, tmp_path: Path, run_spa) -> None:
    x, y = labelled(16, seed=7)
    np.savez(tmp_path / "data.npz", images=x["input"], labels=y)  # one input: any array name
    out, plan, report = tmp_path / "small.onnx", tmp_path / "plan.json", tmp_path / "report.json"
    r = run_spa("prune", ZOO / f"{model}.onnx", "--criterion", name, "--calib", tmp_path / "data.npz", "--ratio", "0.4",
                "--verify", "-o", out, "--plan", plan, "--report", report)
    assert r.returncode == 0, r.stderr
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    rep = json.loads(report.read_text())
    assert rep["verification"]["passed"] and rep["criterion"] == name and rep["groups_pruned"] > 0
    assert json.loads(plan.read_text())["criterion"] == name


# ---- 5. a trained classifier: Taylor keeps more accuracy than random ----------------------------

def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = ((d.images / 16.0 - 0.3) / 0.4).astype(np.float32)[:, None]
    return train_test_split(x, d.target.astype(np.int64), test_size=0.25, random_state=0, stratify=d.target)


def _trained_cnn(x: np.ndarray, y: np.ndarray) -> torch.nn.Module:
    """A small CNN on the bundled 8x8 digits: 8 epochs of Adam, about 3 s on one core."""
    nn = torch.nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    m.train()
    for _ in range(8):
        for idx in torch.randperm(len(ys), generator=gen).split(64):
            loss = torch.nn.functional.cross_entropy(m(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m.eval()


def test_taylor_beats_random_on_a_trained_classifier() -> None:
    x_train, x_test, y_train, y_test = _digits()
    model = _export(_trained_cnn(x_train, y_train), (1, 8, 8))

    def accuracy(m: onnx.ModelProto) -> float:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return float((sess.run(None, {"input": x_test})[0].argmax(1) == y_test).mean())

    assert accuracy(model) > 0.95
    taylor = accuracy(spa.prune(model, 0.4, "taylor", calib={"input": x_train[:256]}, labels=y_train[:256])[0])
    random = [accuracy(spa.prune(model, 0.4, "random", seed=s)[0]) for s in range(5)]
    assert taylor > np.mean(random) + 0.05, (taylor, random)
    assert taylor > max(random), (taylor, random)
