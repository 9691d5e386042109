"""Build the JAX/Flax zoo models with jax2onnx.

Run from the repository root in the JAX venv (see models/README.md)::

    /work/venvs/jax/bin/python -m models.frameworks.build_jax

Writes ``models/zoo/frameworks/flax_cnn.jax2onnx.onnx`` and ``flax_mlp.jax2onnx.onnx`` and their
manifest entries. Both are Flax NNX modules with seeded random weights (``nnx.Rngs(0)``);
BatchNorm statistics are randomised too. Flax convolutions are NHWC, so the CNN takes NHWC
input and jax2onnx wraps its convolutions in Transposes.
"""

from __future__ import annotations

import argparse
import logging

import flax
import jax
import jax.numpy as jnp
import jax2onnx
import numpy as np
from flax import nnx

from models.frameworks.common import pin_hash_seed, save_checked

SEED = 0
OPSET = 21
IMAGE = (32, 32, 3)


class ConvBN(nnx.Module):
    def __init__(self, cin: int, cout: int, rngs: nnx.Rngs, k: int = 3, stride: int = 1, groups: int = 1,
                 relu: bool = True) -> None:
        self.conv = nnx.Conv(cin, cout, (k, k), strides=stride, padding="SAME", feature_group_count=groups,
                             use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, use_running_average=True, rngs=rngs)
        self.relu = relu

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn(self.conv(x))
        return nnx.relu(y) if self.relu else y


class FlaxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.stem = ConvBN(3, 16, rngs)
        self.res1a = ConvBN(16, 16, rngs)
        self.res1b = ConvBN(16, 16, rngs, relu=False)
        self.dw = ConvBN(16, 16, rngs, stride=2, groups=16)
        self.pw = ConvBN(16, 32, rngs, k=1)
        self.res2a = ConvBN(32, 32, rngs)
        self.res2b = ConvBN(32, 32, rngs, relu=False)
        self.se = SqueezeExcite(32, rngs)
        self.fc1 = nnx.Linear(32, 32, rngs=rngs)
        self.fc2 = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        x = nnx.relu(x + self.res1b(self.res1a(x)))
        x = self.pw(self.dw(x))
        x = self.se(nnx.relu(x + self.res2b(self.res2a(x))))
        x = jnp.mean(x, axis=(1, 2))
        return self.fc2(nnx.relu(self.fc1(x)))


class SqueezeExcite(nnx.Module):
    """Mean over H and W -> Linear-ReLU -> Linear-sigmoid -> broadcast ``[:, None, None, :]`` -> Mul."""

    def __init__(self, c: int, rngs: nnx.Rngs) -> None:
        self.reduce = nnx.Linear(c, c // 4, rngs=rngs)
        self.expand = nnx.Linear(c // 4, c, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        s = nnx.sigmoid(self.expand(nnx.relu(self.reduce(jnp.mean(x, axis=(1, 2))))))
        return x * s[:, None, None, :]


class FlaxVGG(nnx.Module):
    """Max pooling, two branches concatenated on the NHWC channel axis, and a flatten of a 4x4 map."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.c1 = ConvBN(3, 16, rngs)
        self.b1 = nnx.Conv(16, 8, (1, 1), rngs=rngs)
        self.b3 = nnx.Conv(16, 16, (3, 3), padding="SAME", rngs=rngs)
        self.c2 = ConvBN(24, 24, rngs)
        self.fc1 = nnx.Linear(4 * 4 * 24, 32, rngs=rngs)
        self.fc2 = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.max_pool(self.c1(x), window_shape=(2, 2), strides=(2, 2))
        x = jnp.concatenate([nnx.relu(self.b1(x)), nnx.relu(self.b3(x))], axis=-1)
        x = nnx.avg_pool(self.c2(x), window_shape=(4, 4), strides=(4, 4))
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))


class FlaxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(64, 64, rngs=rngs)
        self.fc2 = nnx.Linear(64, 48, rngs=rngs)
        self.fc3 = nnx.Linear(48, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.gelu(self.fc1(x), approximate=False)
        x = nnx.silu(self.fc2(x))
        return self.fc3(x)


def randomise(model: nnx.Module, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm statistics and non-zero biases (Flax initialises them to 0/1)."""
    for _, m in nnx.iter_graph(model):
        if isinstance(m, nnx.BatchNorm):
            n = m.scale[...].shape[0]
            m.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, n), jnp.float32)
            m.bias[...] = jnp.asarray(rng.normal(0.0, 0.2, n), jnp.float32)
            m.mean[...] = jnp.asarray(rng.normal(0.0, 0.2, n), jnp.float32)
            m.var[...] = jnp.asarray(rng.uniform(0.5, 1.5, n), jnp.float32)
        elif isinstance(m, (nnx.Linear, nnx.Conv)) and m.bias is not None:
            m.bias[...] = jnp.asarray(rng.normal(0.0, 0.1, m.bias[...].shape), jnp.float32)


def export(model: nnx.Module, file: str, input_shape: tuple[int, ...], what: str) -> None:
    proto = jax2onnx.to_onnx(model, [("B", *input_shape)], model_name=file.split(".")[0], opset=OPSET,
                             input_names=["input"], output_names=["logits"])
    # jax2onnx 0.17.1 cancels Transpose pairs around element-wise ops (BN -> NHWC -> Relu -> NCHW
    # -> Conv becomes BN -> Relu -> Conv) but keeps the NHWC value_info of the moved ops, which the
    # checker rejects. The nodes are right (onnxruntime matches JAX below); only the stale shape
    # annotations are dropped, and the checker re-infers them.
    del proto.graph.value_info[:]
    x = np.random.default_rng(SEED + 1).standard_normal((2, *input_shape)).astype(np.float32)
    expected = np.asarray(model(jnp.asarray(x)))
    info = {
        "model": file.split(".")[0],
        "framework": "jax/flax (nnx)",
        "framework_version": f"jax {jax.__version__}, flax {flax.__version__}",
        "exporter": "jax2onnx",
        "exporter_version": jax2onnx.__version__ if hasattr(jax2onnx, "__version__") else _dist_version("jax2onnx"),
        "builder": "python -m models.frameworks.build_jax",
        "seed": SEED,
        "what": what,
        "params": int(sum(np.size(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))),
    }
    save_checked(proto, file, {"input": x}, [expected], info)


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> None:
    pin_hash_seed("models.frameworks.build_jax")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cnn = FlaxCNN(nnx.Rngs(SEED))
    randomise(cnn, np.random.default_rng(SEED))
    export(cnn, "flax_cnn.jax2onnx.onnx", IMAGE,
           "NHWC Flax NNX CNN: Conv (no bias) + BatchNorm (running averages) + ReLU stem, two identity residual "
           "blocks, depthwise 3x3 stride 2 (feature_group_count=16) + pointwise 1x1, a squeeze-and-excitation "
           "gate (mean, Linear-ReLU, Linear-sigmoid, [:, None, None, :] * x), mean over H and W, Linear-ReLU-Linear")
    vgg = FlaxVGG(nnx.Rngs(SEED))
    randomise(vgg, np.random.default_rng(SEED))
    export(vgg, "flax_vgg.jax2onnx.onnx", IMAGE,
           "NHWC Flax NNX: Conv-BN-ReLU, max_pool, a 1x1 and a 3x3 Conv (bias) branch joined by "
           "jnp.concatenate(axis=-1), Conv-BN-ReLU, avg_pool to 4x4, x.reshape(B, -1) of the NHWC map, "
           "Linear-ReLU-Linear")
    mlp = FlaxMLP(nnx.Rngs(SEED))
    randomise(mlp, np.random.default_rng(SEED))
    export(mlp, "flax_mlp.jax2onnx.onnx", (64,), "Flax NNX MLP 64-64-48-10: Linear, exact GELU, SiLU, Linear")


if __name__ == "__main__":
    main()
