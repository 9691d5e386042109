"""spa.model.onnx_torch: an ONNX graph run in torch computes what onnxruntime computes, and its
gradients are the source module's gradients.

* every committed zoo model (both exporters) against onnxruntime;
* one small graph per op variant the zoo does not reach (opset-dependent forms, pads, modes);
* gradients wrt every weight equal the torch module's own (zoo builders are seeded, so a fresh
  module holds the exported weights), and the digits classifiers of benchmarks/accuracy.py;
* training the converted module, ``to_onnx``, and refusals (unknown op, training BatchNorm).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from spa.errors import UnsupportedModelError  # noqa: E402
from spa.model.onnx_torch import SUPPORTED_OPS, convert  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ZOO_FILES = sorted((ROOT / "models" / "zoo").glob("*.onnx"))
#: Models from other exporters and frameworks: Keras (tf2onnx), Flax (jax2onnx), Paddle, scikit-learn,
#: Hugging Face transformers and torch.nn transformers (both torch exporters, and onnxruntime-optimised).
OTHER_FILES = sorted(p for d in ("frameworks", "hf", "transformers") for p in (ROOT / "models" / "zoo" / d).glob("*.onnx"))


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def torch_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    module = convert(model)
    env = module.run({k: torch.from_numpy(v) for k, v in feeds.items()})
    return [env[o].detach().numpy() for o in module.output_names]


def assert_same(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-5) -> None:
    want, got = ort_run(model, feeds), torch_run(model, feeds)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.shape == g.shape and w.dtype == g.dtype, (w.shape, g.shape, w.dtype, g.dtype)
        scale = float(np.abs(w).max()) if w.size and w.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(g, w, rtol=0, atol=rtol * max(scale, 1.0))


# ---- 1. every zoo model ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ZOO_FILES, ids=[p.name for p in ZOO_FILES])
def test_zoo_model_matches_onnxruntime(path: Path) -> None:
    model = onnx.load(str(path))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert_same(model, {model.graph.input[0].name: x})


@pytest.mark.parametrize("path", OTHER_FILES, ids=[p.name for p in OTHER_FILES])
def test_other_frameworks_and_transformers(path: Path) -> None:
    """Every model of the other zoos converts and matches onnxruntime, except those with ops outside the
    default domain (onnxruntime's fused com.microsoft ops, scikit-learn's ai.onnx.ml), which are refused by name."""
    from spa.model.runtime import random_inputs

    model = onnx.load(str(path))
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        with pytest.raises(UnsupportedModelError, match=re.escape(foreign[0])):
            convert(model)
        return
    assert_same(model, random_inputs(model, seed=0), rtol=1e-5)


# ---- 2. op variants ----------------------------------------------------------------------------

def _model(opset: int, inputs: str, body: str, output: str = "") -> onnx.ModelProto:
    text = f'<ir_version: 8, opset_import: ["" : {opset}]>\ng ({inputs}) => ({output or "float y"}) {{\n{body}\n}}'
    model = onnx.parser.parse_model(text)
    if not output:  # the parser writes a scalar shape for "float y": leave it unknown
        model.graph.output[0].type.tensor_type.ClearField("shape")
    return model


X4 = "float[2,4,7,6] x"
C = "Constant<value = int64[{n}] {{{v}}}>()"
CASES: dict[str, tuple[int, str, str]] = {
    "slice-negative-step": (13, X4, f"s = {C.format(n=2, v='-1, 5')}\ne = {C.format(n=2, v='-100, 0')}\n"
                                    f"a = {C.format(n=2, v='1, 3')}\nt = {C.format(n=2, v='-2, -1')}\n"
                                    "y = Slice(x, s, e, a, t)"),
    "slice-opset9-attrs": (9, X4, "y = Slice<starts = [1, 0], ends = [3, 4], axes = [2, 3]>(x)"),
    "pad-reflect": (13, X4, f"p = {C.format(n=8, v='0, 0, 1, 2, 0, 0, 2, 1')}\ny = Pad<mode = \"reflect\">(x, p)"),
    "pad-edge": (13, X4, f"p = {C.format(n=8, v='0, 0, 3, 0, 0, 0, 0, 2')}\ny = Pad<mode = \"edge\">(x, p)"),
    "pad-constant-value": (13, X4, f"p = {C.format(n=8, v='0, 1, 0, 0, 0, 0, 2, 0')}\n"
                                   "v = Constant<value = float {2.5}>()\ny = Pad(x, p, v)"),
    "pad-axes": (18, X4, f"p = {C.format(n=2, v='1, 2')}\nv = Constant<value = float {{0.0}}>()\n"
                         f"a = {C.format(n=1, v='-1')}\ny = Pad(x, p, v, a)"),
    "avgpool-asymmetric": (17, X4, "y = AveragePool<kernel_shape = [3, 3], pads = [0, 1, 1, 0], strides = [2, 2]>(x)"),
    "avgpool-include-pad-ceil": (17, X4, "y = AveragePool<kernel_shape = [2, 2], pads = [1, 1, 1, 1], strides = [2, 2], "
                                         "count_include_pad = 1, ceil_mode = 0>(x)"),
    "avgpool-same-upper": (17, X4, "y = AveragePool<kernel_shape = [3, 3], auto_pad = \"SAME_UPPER\", strides = [2, 2]>(x)"),
    "maxpool-same-lower": (17, X4, "y = MaxPool<kernel_shape = [3, 2], auto_pad = \"SAME_LOWER\", strides = [2, 2]>(x)"),
    "maxpool-ceil-dilated": (17, X4, "y = MaxPool<kernel_shape = [2, 2], strides = [2, 2], ceil_mode = 1, "
                                     "dilations = [1, 2]>(x)"),
    "global-max-pool": (17, X4, "y = GlobalMaxPool(x)"),
    "conv-same-lower-dilated-grouped": (17, X4, "w = Constant<value = float[6, 2, 3, 3] {" + ", ".join(
        str((i * 7 % 11) / 10 - 0.5) for i in range(108)) + "}>()\n"
        "y = Conv<auto_pad = \"SAME_LOWER\", group = 2, strides = [1, 2]>(x, w)"),
    "conv-dilated-strided": (17, X4, "w = Constant<value = float[2, 4, 3, 2] {" + ", ".join(
        str((i * 7 % 11) / 10 - 0.5) for i in range(48)) + "}>()\n"
        "y = Conv<dilations = [2, 3], pads = [2, 1, 1, 2], strides = [2, 1]>(x, w)"),
    "conv-asymmetric-pads": (17, X4, "w = Constant<value = float[3, 4, 2, 2] {" + ", ".join(
        str((i * 5 % 13) / 10 - 0.6) for i in range(48)) + "}>()\ny = Conv<pads = [1, 0, 0, 2]>(x, w)"),
    "conv-1d": (17, "float[2,4,9] x", "w = Constant<value = float[3, 4, 3] {" + ", ".join(
        str((i * 3 % 7) / 5 - 0.5) for i in range(36)) + "}>()\ny = Conv<pads = [1, 1], strides = [2]>(x, w)"),
    "convtranspose-pads-output-padding": (17, X4, "w = Constant<value = float[4, 2, 3, 3] {" + ", ".join(
        str((i * 7 % 9) / 8 - 0.5) for i in range(72)) + "}>()\n"
        "y = ConvTranspose<strides = [2, 2], pads = [1, 0, 0, 1], output_padding = [1, 0]>(x, w)"),
    "convtranspose-output-shape": (17, X4, "w = Constant<value = float[4, 1, 2, 2] {" + ", ".join(
        str((i * 3 % 5) / 4 - 0.5) for i in range(16)) + "}>()\n"
        "y = ConvTranspose<strides = [2, 2], output_shape = [13, 11]>(x, w)"),
    "resize-linear-half-pixel": (13, X4, "s = Constant<value = float[4] {1, 1, 2, 1.5}>()\n"
                                         "y = Resize<mode = \"linear\">(x, , s)"),
    "resize-linear-align-corners": (13, X4, f"z = {C.format(n=4, v='2, 4, 9, 4')}\n"
                                            "y = Resize<mode = \"linear\", coordinate_transformation_mode = "
                                            "\"align_corners\">(x, , , z)"),
    "resize-cubic": (13, X4, "s = Constant<value = float[4] {1, 1, 2, 2}>()\n"
                             "y = Resize<mode = \"cubic\", cubic_coeff_a = -0.75>(x, , s)"),
    "resize-nearest-sizes": (13, X4, f"z = {C.format(n=4, v='2, 4, 14, 18')}\n"
                                     "y = Resize<mode = \"nearest\", coordinate_transformation_mode = \"asymmetric\", "
                                     "nearest_mode = \"floor\">(x, , , z)"),
    "softmax-opset11-coerced": (11, X4, "y = Softmax<axis = 2>(x)"),
    "logsoftmax-opset13": (13, X4, "y = LogSoftmax<axis = 1>(x)"),
    "split-opset11-attr": (11, X4, "a, b = Split<axis = 1, split = [1, 3]>(x)\ny = Concat<axis = 1>(b, a)"),
    "split-opset13-input": (13, X4, f"s = {C.format(n=2, v='5, 2')}\na, b = Split<axis = 2>(x, s)\n"
                                    "y = Concat<axis = 2>(b, a)"),
    "split-opset18-uneven": (18, X4, "a, b, c = Split<axis = 2, num_outputs = 3>(x)\ny = Concat<axis = 2>(c, b, a)"),
    "split-equal-opset11": (11, X4, "a, b = Split<axis = 1>(x)\ny = Sub(a, b)"),
    "reducemean-opset13-attr": (13, X4, "y = ReduceMean<axes = [1, -1], keepdims = 0>(x)"),
    "reducesum-opset13-input": (13, X4, f"a = {C.format(n=1, v='2')}\ny = ReduceSum(x, a)"),
    "reducemax-opset18": (18, X4, f"a = {C.format(n=2, v='0, 2')}\ny = ReduceMax<keepdims = 0>(x, a)"),
    "reduce-all": (18, X4, "p = ReduceProd(x)\nl = ReduceL2(x)\ny = Add(p, l)"),
    "reduce-logsumexp-l1-min": (18, X4, f"a = {C.format(n=1, v='1')}\nl = ReduceLogSumExp(x, a)\n"
                                        "m = ReduceL1(x, a)\nn = ReduceMin(x, a)\ns = ReduceSumSquare(x, a)\n"
                                        "t = Add(l, m)\nu = Add(n, s)\ny = Add(t, u)"),
    "squeeze-unsqueeze-opset11": (11, X4, "u = Unsqueeze<axes = [0, -1]>(x)\ny = Squeeze<axes = [0]>(u)"),
    "squeeze-unsqueeze-opset13": (13, X4, f"a = {C.format(n=2, v='1, 4')}\nu = Unsqueeze(x, a)\n"
                                          "y = Squeeze(u, a)"),
    "instance-norm": (17, X4, "s = Constant<value = float[4] {1, 2, 0.5, -1}>()\n"
                              "b = Constant<value = float[4] {0, 1, 0, -1}>()\ny = InstanceNormalization(x, s, b)"),
    "layer-norm-two-axes": (17, X4, "s = Constant<value = float[7, 6] {" + ", ".join(
        str(1 + i / 50) for i in range(42)) + "}>()\ny = LayerNormalization<axis = 2>(x, s)"),
    "group-norm-opset21": (21, X4, "s = Constant<value = float[4] {1, 2, 0.5, -1}>()\n"
                                   "b = Constant<value = float[4] {0, 1, 0, -1}>()\n"
                                   "y = GroupNormalization<num_groups = 2, epsilon = 0.001>(x, s, b)"),
    "einsum-matmul-gemm": (17, "float[3,4] x", "w = Constant<value = float[5, 4] {" + ", ".join(
        str(i / 10 - 1) for i in range(20)) + "}>()\nc = Constant<value = float[5] {1, 2, 3, 4, 5}>()\n"
        "e = Einsum<equation = \"ij,kj->ik\">(x, w)\ng = Gemm<transB = 1, alpha = 0.5, beta = 2.0>(x, w, c)\n"
        "v = Transpose(w)\nm = MatMul(x, v)\nt = Add(e, g)\ny = Add(t, m)"),
    "gather-negative-2d": (13, X4, "i = Constant<value = int64[2, 2] {-1, 0, 2, -3}>()\ny = Gather<axis = 3>(x, i)"),
    "gather-scalar-elements": (13, X4, "i = Constant<value = int64 {-2}>()\ng = Gather<axis = 1>(x, i)\n"
                                       "j = Constant<value = int64[2, 1, 1, 1] {0, 1}>()\n"
                                       f"e = GatherElements<axis = 0>(x, j)\na = {C.format(n=1, v='1')}\n"
                                       "u = Unsqueeze(g, a)\ny = Add(u, e)"),
    "gathernd-batch-dims": (13, X4, "i = Constant<value = int64[2, 3, 2] {0, 1, 3, -1, 2, 0, 1, 1, 0, 5, 3, 2}>()\n"
                                    "y = GatherND<batch_dims = 1>(x, i)"),
    "gathernd": (13, X4, "i = Constant<value = int64[3, 1] {1, 0, -1}>()\ny = GatherND(x, i)"),
    "trilu": (14, X4, "k = Constant<value = int64 {-1}>()\nu = Trilu(x, k)\nl = Trilu<upper = 0>(x)\ny = Add(u, l)"),
    "expand-tile-range": (13, "float[1,4,1] x", f"s = {C.format(n=3, v='3, 1, 5')}\ne = Expand(x, s)\n"
                                                f"r = {C.format(n=3, v='1, 1, 2')}\nt = Tile(e, r)\n"
                                                "a = Constant<value = float {0.5}>()\nb = Constant<value = float {5.5}>()\n"
                                                "d = Constant<value = float {0.5}>()\nq = Range(a, b, d)\ny = Add(t, q)"),
    "shape-size-constantofshape": (15, X4, "s = Shape<start = 1, end = -1>(x)\nz = Size(x)\n"
                                           "c = ConstantOfShape<value = float[1] {2}>(s)\nf = Cast<to = 1>(z)\n"
                                           "y = Mul(c, f)"),
    "reshape-zero-flatten-axis0": (14, X4, f"s = {C.format(n=3, v='0, -1, 3')}\nr = Reshape(x, s)\n"
                                           "f = Flatten<axis = 0>(r)\ny = Transpose(f)"),
    "where-compare-logic": (13, X4, "z = Constant<value = float {0.2}>()\ng = Greater(x, z)\nl = Less(x, z)\n"
                                    "o = Or(g, l)\nn = Not(o)\ne = Equal(x, x)\nq = Xor(g, n)\nk = And(e, q)\n"
                                    "m = GreaterOrEqual(x, z)\na = Neg(x)\nb = Abs(x)\nw = Where(m, a, b)\n"
                                    "y = Where(k, x, w)"),
    "integer-div-mod-pow": (13, X4, "t = Constant<value = float {10.0}>()\nf = Mul(x, t)\ni = Cast<to = 7>(f)\n"
                                    "d = Constant<value = int64 {3}>()\nq = Div(i, d)\nr = Mod<fmod = 1>(i, d)\n"
                                    "s = Mod(i, d)\ne = Constant<value = float {2.0}>()\np = Pow(x, e)\n"
                                    "a = Add(q, r)\nb = Add(a, s)\nc = Cast<to = 1>(b)\ny = Add(c, p)"),
    "argmax-last-index": (13, X4, "r = Round(x)\na = ArgMax<axis = 2, select_last_index = 1>(r)\n"
                                  f"b = ArgMin<axis = -1, keepdims = 0>(x)\nk = {C.format(n=1, v='3')}\n"
                                  "u = Unsqueeze(b, k)\ns = Add(a, u)\ny = Cast<to = 1>(s)"),
    "activations": (13, X4, "a = Selu<alpha = 1.5, gamma = 0.8>(x)\nb = Celu<alpha = 0.7>(x)\n"
                            "c = ThresholdedRelu<alpha = 0.3>(x)\nd = HardSigmoid<alpha = 0.3, beta = 0.4>(x)\n"
                            "e = Softsign(x)\nf = Elu<alpha = 0.5>(x)\nt = Constant<value = float {30.0}>()\n"
                            "u = Mul(x, t)\ng = Softplus(u)\nh = Sum(a, b, c, d)\nk = Mean(e, f, g)\n"
                            "m = Max(h, k, x)\nn = Min(h, k)\np = Abs(x)\nq = Neg(p)\nr = Exp(q)\ns = Sin(x)\n"
                            "v = Add(m, n)\nw = Add(s, r)\nz = Add(v, w)\ny = PRelu(z, a)"),
    "clip-opset11-inputs": (11, X4, "lo = Constant<value = float {-0.3}>()\nhi = Constant<value = float {0.4}>()\n"
                                    "a = Clip(x, lo, hi)\nb = Clip(x, , hi)\ny = Add(a, b)"),
    "clip-opset6-attrs": (6, X4, "y = Clip<min = -0.5, max = 0.25>(x)"),
    "sequence-ops": (13, X4, "n = Neg(x)\ns = SequenceConstruct(x, n)\nl = SequenceLength(s)\n"
                             "c = ConcatFromSequence<axis = 1, new_axis = 1>(s)\nq = SplitToSequence<axis = 3, "
                             "keepdims = 0>(x)\ni = Constant<value = int64 {2}>()\na = SequenceAt(q, i)\n"
                             f"k = {C.format(n=1, v='1')}\nr = ReduceSum<keepdims = 0>(c, k)\n"
                             f"j = {C.format(n=1, v='3')}\nu = Unsqueeze(a, j)\nf = Cast<to = 1>(l)\n"
                             "b = Add(r, u)\ny = Add(b, f)"),
    "dropout-mask-identity": (13, X4, "d, m = Dropout(x)\ni = Identity(d)\nn = Neg(x)\ny = Where(m, i, n)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_variant_matches_onnxruntime(case: str) -> None:
    opset, inputs, body = CASES[case]
    model = _model(opset, inputs, body)  # onnxruntime validates it when loading
    shape = [int(d) for d in inputs.split("[")[1].split("]")[0].split(",")]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    assert_same(model, {"x": x})


def test_the_op_table_covers_the_zoo_and_names_itself() -> None:
    used = {n.op_type for p in ZOO_FILES for n in onnx.load(str(p)).graph.node}
    assert used <= SUPPORTED_OPS
    assert {"LayerNormalization", "MatMul", "Softmax", "Gelu", "Erf", "Where"} <= SUPPORTED_OPS  # ViT


# ---- 3. gradients are the source module's gradients ------------------------------------------

def _grads(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    module.zero_grad()
    out = module(x)
    out = out[0] if isinstance(out, tuple) else out
    torch.nn.functional.cross_entropy(out, y).backward()
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


def assert_same_gradients(source: torch.nn.Module, model: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    y = torch.arange(shape[0]) % 10
    want = _grads(source.eval(), x, y)
    converted = convert(model)
    got = _grads(converted, x, y)
    assert set(want) <= set(got), set(want) - set(got)  # every weight, under its torch name
    for k, g in want.items():
        np.testing.assert_allclose(got[k].numpy(), g.numpy(), rtol=0, atol=1e-5 * max(float(g.abs().max()), 1e-3),
                                   err_msg=k)


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenetv2", "se_block", "misc_ops"])
@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_gradients_match_the_zoo_modules(name: str, exporter: str) -> None:
    from models.zoo import ZOO

    model = onnx.load(str(ROOT / "models" / "zoo" / f"{name}.{exporter}.onnx"))
    assert_same_gradients(ZOO[name](), model, (4, 3, 32, 32))  # seeded builders: the exported weights


@pytest.mark.parametrize("name,exporter", [("resnet", "ts"), ("vgg", "ts"), ("mobilenet", "ts"), ("vit", "ts"),
                                           ("vit", "dynamo")])
def test_digits_classifiers(name: str, exporter: str, tmp_path: Path) -> None:
    """The benchmark classifiers (ResNet/VGG/MobileNet/ViT-style): outputs and gradients."""
    pytest.importorskip("onnxscript")
    from benchmarks.accuracy import MODELS
    from models.build_zoo import export_to

    torch.manual_seed(0)
    module = MODELS[name][0]().eval()
    path = tmp_path / f"{name}.onnx"
    export_to(module, path, exporter=exporter, input_shape=(1, 1, 32, 32))  # type: ignore[arg-type]
    model = onnx.load(str(path))
    x = np.random.default_rng(2).standard_normal((3, 1, 32, 32)).astype(np.float32)
    assert_same(model, {"input": x})
    assert_same_gradients(module, model, (3, 1, 32, 32))


# ---- 4. a trainable module -------------------------------------------------------------------

def test_parameters_buffers_and_untied_views(tmp_path: Path) -> None:
    import io

    source = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 4, 1),
                                 torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2)).eval()
    source(torch.zeros(1, 3, 5, 5))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(source, (torch.zeros(1, 3, 5, 5),), buf, dynamo=False, do_constant_folding=False)
    model = onnx.load_from_string(buf.getvalue())
    stored = {i.name for i in model.graph.initializer}
    views = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in stored}
    assert "3.weight" in views  # the two fresh BatchNorms are equal: the exporter shares one tensor
    module = convert(model)
    params, buffers = dict(module.named_parameters()), dict(module.named_buffers())
    assert set(params) == {k for k, _ in source.named_parameters()}  # every torch parameter, by name
    assert set(buffers) >= {"1.running_mean", "1.running_var", "3.running_mean", "3.running_var"}
    with torch.no_grad():
        module.tensor("3.weight").add_(1.0)  # untied: one tensor per layer
    assert not torch.equal(module.tensor("1.weight"), module.tensor("3.weight"))
    tied = convert(model, untie=False)
    assert sum(p.numel() for p in tied.parameters()) < sum(p.numel() for p in module.parameters())


def test_training_a_converted_pruned_model_and_writing_it_back(tmp_path: Path) -> None:
    """The way back for any framework: prune, convert, fine-tune in torch, write the weights to ONNX."""
    import spa

    pruned, plan, _ = spa.prune(ROOT / "models" / "zoo" / "resnet_basic.dynamo.onnx", ratio=0.5)
    module = convert(pruned)
    rng = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=rng), torch.randint(0, 10, (16,), generator=rng)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses
    trained = module.to_onnx()
    onnx.checker.check_model(trained, full_check=True)
    assert [i.name for i in trained.graph.initializer] == [i.name for i in pruned.graph.initializer]
    changed = [i.name for i, j in zip(trained.graph.initializer, pruned.graph.initializer)
               if not np.array_equal(onnx.numpy_helper.to_array(i), onnx.numpy_helper.to_array(j))]
    assert changed and "fc.weight" in changed
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(ort_run(trained, {"input": x.numpy()})[0], want, rtol=0, atol=1e-4)


def test_back_to_framework_doc_example_runs(tmp_path: Path) -> None:
    """docs/back-to-framework.md: prune a Flax model, fine-tune it in torch, write it back to ONNX."""
    import os
    import shutil

    from sklearn.datasets import load_digits

    doc = (ROOT / "docs" / "back-to-framework.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    src = "models/zoo/frameworks/flax_mlp.jax2onnx.onnx"
    assert src in code
    (tmp_path / src).parent.mkdir(parents=True)
    shutil.copy(ROOT / src, tmp_path / src)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    digits = load_digits()
    x, y = (digits.data[1200:] / 16.0).astype(np.float32), digits.target[1200:]  # held out by the example
    tuned = onnx.load(str(tmp_path / "flax_mlp.finetuned.onnx"))
    onnx.checker.check_model(tuned, full_check=True)
    import spa

    untrained, _, _ = spa.prune(ROOT / src, ratio=0.5)
    name = untrained.graph.input[0].name
    before = float((ort_run(untrained, {name: x})[0].argmax(1) == y).mean())
    after = float((ort_run(tuned, {name: x})[0].argmax(1) == y).mean())
    assert after > 0.8 and after > before + 0.5, (before, after)


def test_to_onnx_materialises_untied_views() -> None:
    model = onnx.load(str(ROOT / "models" / "zoo" / "resnet_basic.ts.onnx"))
    module = convert(model)
    out = module.to_onnx()
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(ort_run(out, {"input": x})[0], ort_run(model, {"input": x})[0], rtol=0, atol=1e-5)


# ---- 5. refusals ---------------------------------------------------------------------------------

def test_unsupported_op_is_named() -> None:
    model = _model(17, X4, "z = NonMaxSuppressionLike(x)\ny = Relu(z)")
    with pytest.raises(UnsupportedModelError, match=r"no implementation of op NonMaxSuppressionLike \(node"):
        convert(model)


def test_other_domains_and_training_batchnorm_are_refused() -> None:
    model = _model(17, X4, "y = Relu(x)")
    model.graph.node[0].domain = "com.microsoft"
    model.opset_import.add(domain="com.microsoft", version=1)
    with pytest.raises(UnsupportedModelError, match=r"com\.microsoft\.Relu"):
        convert(model)
    bn = _model(17, X4, "s = Constant<value = float[4] {1, 1, 1, 1}>()\ny = BatchNormalization<training_mode = 1>"
                        "(x, s, s, s, s)")
    with pytest.raises(UnsupportedModelError, match="training_mode=1"):
        convert(bn)(torch.zeros(2, 4, 7, 6))


def test_cli_error_is_one_line(run_spa: Callable[..., Any], tmp_path: Path) -> None:
    """Through the gradient criteria, an op the table lacks is a one-line user error (exit 1)."""
    w = ", ".join(str(i / 12) for i in range(12))
    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]>\n'
        f"g (float[N,4] x) => (float[N,2] y) <float[4,3] w = {{{w}}}, float[3,2] v = {{1, 2, 3, 4, 5, 6}}> {{\n"
        "a = Constant<value = int64 {0}>()\nc = CumSum(x, a)\nm = MatMul(c, w)\nh = Relu(m)\ny = MatMul(h, v)\n}")
    assert "CumSum" not in SUPPORTED_OPS
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "d.npz", x=np.ones((4, 4), np.float32), labels=np.zeros(4, np.int64))
    proc = run_spa("prune", tmp_path / "m.onnx", "--criterion", "snip", "--calib", tmp_path / "d.npz")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc
    first = proc.stderr.splitlines()[0]
    assert first.startswith("spa: error: cannot convert to torch") and "CumSum" in first, proc.stderr
