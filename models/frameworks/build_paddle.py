"""Build the PaddlePaddle zoo model with paddle2onnx.

Run from the repository root in the Paddle venv (see models/README.md)::

    /work/venvs/paddle/bin/python -m models.frameworks.build_paddle

Writes ``models/zoo/frameworks/paddle_cnn.paddle2onnx.onnx`` and its manifest entry. The model is
saved with ``paddle.jit.save`` (static graph, dynamic batch) and converted by
``paddle2onnx.export``. Weights and BatchNorm statistics are random (seeded).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import paddle
import paddle2onnx
from paddle import nn

from models.frameworks.common import BuildError, pin_hash_seed, save_checked

SEED = 0
OPSET = 17


class ConvBN(nn.Layer):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Layer):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = ConvBN(c, c)
        self.b = ConvBN(c, c, act=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return nn.functional.relu(x + self.b(self.a(x)))


class SqueezeExcite(nn.Layer):
    """GAP -> 1x1 reduce -> ReLU -> 1x1 expand -> Hardsigmoid -> channel-wise Mul."""

    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.reduce = nn.Conv2D(c, c // r, 1)
        self.expand = nn.Conv2D(c // r, c, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = self.expand(nn.functional.relu(self.reduce(self.pool(x))))
        return x * nn.functional.hardsigmoid(s)


class PaddleCNN(nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 16)
        self.res1 = Residual(16)
        self.dw = ConvBN(16, 16, stride=2, groups=16)
        self.pw = ConvBN(16, 32, k=1)
        self.se = SqueezeExcite(32)
        self.res2 = Residual(32)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc1 = nn.Linear(32, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.res1(self.stem(x))
        x = self.res2(self.se(self.pw(self.dw(x))))
        x = paddle.flatten(self.pool(x), 1)
        return self.fc2(nn.functional.relu(self.fc1(x)))


def randomise_batchnorm(model: nn.Layer, rng: np.random.Generator) -> None:
    for layer in model.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            n = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.5, 1.5, n).astype(np.float32))
            layer.bias.set_value(rng.normal(0.0, 0.2, n).astype(np.float32))
            layer._mean.set_value(rng.normal(0.0, 0.2, n).astype(np.float32))
            layer._variance.set_value(rng.uniform(0.5, 1.5, n).astype(np.float32))


def export(model: nn.Layer, file: str, input_shape: tuple[int, ...], what: str) -> None:
    model.eval()
    spec = [paddle.static.InputSpec([None, *input_shape], "float32", name="input")]
    x = np.random.default_rng(SEED + 1).standard_normal((2, *input_shape)).astype(np.float32)
    expected = model(paddle.to_tensor(x)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "model")
        paddle.jit.save(model, prefix, input_spec=spec)
        program = next((p for p in (f"{prefix}.json", f"{prefix}.pdmodel") if os.path.exists(p)), None)
        if program is None:
            raise BuildError(f"paddle.jit.save wrote no program file: {sorted(os.listdir(tmp))}")
        out = str(Path(tmp) / "model.onnx")
        paddle2onnx.export(program, f"{prefix}.pdiparams", out, opset_version=OPSET, enable_onnx_checker=True)
        proto = onnx.load(out)
    info = {
        "model": file.split(".")[0],
        "framework": "paddlepaddle",
        "framework_version": f"paddlepaddle {paddle.__version__}",
        "exporter": "paddle2onnx",
        "exporter_version": paddle2onnx.__version__,
        "builder": "python -m models.frameworks.build_paddle",
        "seed": SEED,
        "what": what,
        "params": int(sum(int(np.prod(p.shape)) for p in model.parameters())),
    }
    save_checked(proto, file, {proto.graph.input[0].name: x}, [expected], info)


def main() -> None:
    pin_hash_seed("models.frameworks.build_paddle")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paddle.seed(SEED)
    model = PaddleCNN()
    randomise_batchnorm(model, np.random.default_rng(SEED))
    export(model, "paddle_cnn.paddle2onnx.onnx", (3, 32, 32),
           "NCHW Paddle CNN: Conv2D-BatchNorm2D-ReLU stem, two identity residual blocks, depthwise 3x3 "
           "stride 2 + pointwise 1x1, squeeze-and-excitation (AdaptiveAvgPool2D, 1x1 convs, Hardsigmoid, Mul), "
           "AdaptiveAvgPool2D, flatten, Linear-ReLU-Linear")


if __name__ == "__main__":
    main()
