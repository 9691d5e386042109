"""Build the TensorFlow/Keras zoo models with tf2onnx.

Run from the repository root in the TensorFlow venv (see models/README.md)::

    /work/venvs/tf/bin/python -m models.frameworks.build_keras

Writes ``models/zoo/frameworks/keras_cnn.tf2onnx.onnx`` and ``keras_mlp.tf2onnx.onnx`` and
their manifest entries. Weights are random (seeded); BatchNorm statistics are randomised too,
so no BatchNorm is an identity. The CNN keeps Keras' NHWC layout at its input: tf2onnx wraps
every convolution in Transposes (NHWC -> NCHW -> NHWC) and its optimizer pushes them through
BatchNorm, ReLU and Add where it can.
"""

from __future__ import annotations

import argparse
import logging
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

from models.frameworks.common import pin_hash_seed, save_checked  # noqa: E402

SEED = 0
OPSET = 17
IMAGE = (32, 32, 3)


def conv_bn(x: keras.KerasTensor, filters: int, name: str, kernel: int = 3, stride: int = 1,
            relu: bool = True) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def residual(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """Two 3x3 Conv-BN with an identity shortcut: the Add couples both convs' output channels."""
    y = conv_bn(x, filters, f"{name}_a")
    y = conv_bn(y, filters, f"{name}_b", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def depthwise_block(x: keras.KerasTensor, filters: int, name: str, stride: int) -> keras.KerasTensor:
    """MobileNet-style: depthwise 3x3 (with bias) - BN - ReLU6, then pointwise 1x1 - BN - ReLU."""
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu6")(x)
    return conv_bn(x, filters, f"{name}_pw", kernel=1)


def squeeze_excite(x: keras.KerasTensor, channels: int, name: str) -> keras.KerasTensor:
    """GAP -> Dense-ReLU -> Dense-sigmoid -> Reshape((1, 1, C)) -> Multiply with the NHWC map."""
    s = keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    s = keras.layers.Dense(channels // 4, activation="relu", name=f"{name}_reduce")(s)
    s = keras.layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(s)
    s = keras.layers.Reshape((1, 1, channels), name=f"{name}_reshape")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def keras_cnn() -> keras.Model:
    inp = keras.Input(IMAGE, name="input")
    x = conv_bn(inp, 16, "stem")
    x = residual(x, 16, "res1")
    x = depthwise_block(x, 32, "dw1", stride=2)
    x = residual(x, 32, "res2")
    x = squeeze_excite(x, 32, "se")
    # A projection shortcut: 1x1 stride-2 conv + BN on the skip path, added to a conv branch.
    skip = conv_bn(x, 48, "proj", kernel=1, stride=2, relu=False)
    y = conv_bn(x, 48, "res3_a", stride=2)
    y = conv_bn(y, 48, "res3_b", relu=False)
    x = keras.layers.ReLU(name="res3_out")(keras.layers.Add(name="res3_add")([skip, y]))
    x = depthwise_block(x, 64, "dw2", stride=1)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    out = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="keras_cnn")


def keras_vgg() -> keras.Model:
    """Flatten of an NHWC map into Dense: tf2onnx must keep a Transpose before the Reshape."""
    inp = keras.Input(IMAGE, name="input")
    x = conv_bn(inp, 16, "c1")
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    a = keras.layers.Conv2D(8, 1, activation="relu", name="branch1x1")(x)
    b = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="branch3x3")(x)
    x = keras.layers.Concatenate(axis=-1, name="concat")([a, b])
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(24, 3, padding="valid", use_bias=False, name="c2_conv")(x)
    x = keras.layers.BatchNormalization(name="c2_bn")(x)
    x = keras.layers.ReLU(name="c2_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.SeparableConv2D(32, 3, padding="same", activation="relu", name="sep")(x)
    x = keras.layers.AveragePooling2D(2, name="pool3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    out = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="keras_vgg")


def keras_mlp() -> keras.Model:
    inp = keras.Input((64,), name="input")
    x = keras.layers.Dense(64, activation="relu", name="fc1")(inp)
    x = keras.layers.Dense(48, activation="tanh", name="fc2")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc3")(x)
    out = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="keras_mlp")


def randomise_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, n).astype(np.float32),   # gamma
                rng.normal(0.0, 0.2, n).astype(np.float32),    # beta
                rng.normal(0.0, 0.2, n).astype(np.float32),    # moving mean
                rng.uniform(0.5, 1.5, n).astype(np.float32),   # moving variance
            ])


def randomise_biases(model: keras.Model, rng: np.random.Generator) -> None:
    """Keras initialises biases to zero, and tf2onnx drops an Add of zeros: make them non-zero."""
    for layer in model.layers:
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.assign(rng.normal(0.0, 0.1, bias.shape).astype(np.float32))


GENERATED = re.compile(r"(^const_fold_opt__\d+$)|(__\d+$)")


def canonical_constant_names(model: onnx.ModelProto) -> None:
    """Rename tf2onnx's generated constants ``const__0``, ``const__1``... in order of first use.

    tf2onnx numbers the constants it creates, and when it merges duplicated constants the one
    that survives (and so the name) varies from run to run; the values do not. Renaming them
    by first use makes rebuilt files identical byte for byte.
    """
    generated = {i.name for i in model.graph.initializer if GENERATED.search(i.name)}
    order: dict[str, str] = {}
    for node in model.graph.node:
        for t in node.input:
            if t in generated and t not in order:
                order[t] = f"const__{len(order)}"
    for init in model.graph.initializer:
        init.name = order.get(init.name, init.name)
    for node in model.graph.node:
        node.input[:] = [order.get(t, t) for t in node.input]
    kept = sorted(model.graph.initializer, key=lambda i: i.name)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def export(model: keras.Model, file: str, input_shape: tuple[int, ...], what: str,
           optimize: bool = True) -> None:
    """``tf2onnx.convert.from_keras``; ``optimize=False`` skips tf2onnx's graph optimizers."""
    spec = (tf.TensorSpec((None, *input_shape), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET,
                                          optimizers=None if optimize else {})
    canonical_constant_names(proto)
    x = np.random.default_rng(SEED + 1).standard_normal((2, *input_shape)).astype(np.float32)
    expected = model(x, training=False).numpy()
    info = {
        "model": model.name,
        "framework": "tensorflow/keras",
        "framework_version": f"tensorflow {tf.__version__}, keras {keras.__version__}",
        "exporter": "tf2onnx" + ("" if optimize else " (optimizers={})"),
        "exporter_version": tf2onnx.__version__,
        "builder": "python -m models.frameworks.build_keras",
        "seed": SEED,
        "what": what,
        "params": int(model.count_params()),
    }
    save_checked(proto, file, {proto.graph.input[0].name: x}, [expected], info)


CNN_WHAT = ("Conv2D (no bias) + BatchNormalization + ReLU stem, two identity residual blocks (Add), a squeeze-"
            "and-excitation gate (GAP, Dense-ReLU, Dense-sigmoid, Reshape to (1, 1, C), Multiply), a projection "
            "residual (1x1 stride-2 Conv+BN shortcut), DepthwiseConv2D (bias) + BN + ReLU6 + pointwise Conv2D "
            "blocks, GlobalAveragePooling2D, Dense-ReLU-Dense; NHWC input")


def build(model: keras.Model) -> keras.Model:
    rng = np.random.default_rng(SEED)
    randomise_batchnorm(model, rng)
    randomise_biases(model, rng)
    return model


def main() -> None:
    pin_hash_seed("models.frameworks.build_keras")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keras.utils.set_random_seed(SEED)
    cnn = build(keras_cnn())
    export(cnn, "keras_cnn.tf2onnx.onnx", IMAGE,
           CNN_WHAT + "; tf2onnx's optimizers fold BN into the convs and cancel all Transposes but the input one")
    export(cnn, "keras_cnn.tf2onnx-noopt.onnx", IMAGE,
           CNN_WHAT + "; converted without tf2onnx's optimizers: every Conv and BatchNormalization sits between "
           "NHWC->NCHW and NCHW->NHWC Transposes, Add/ReLU/Clip/ReduceMean run on NHWC tensors", optimize=False)
    keras.utils.set_random_seed(SEED)
    export(build(keras_vgg()), "keras_vgg.tf2onnx.onnx", IMAGE,
           "Conv-BN-ReLU, MaxPooling2D, a 1x1 and a 3x3 branch joined by Concatenate(axis=-1), ZeroPadding2D + "
           "valid Conv-BN-ReLU, MaxPooling2D, SeparableConv2D (depthwise + pointwise, ReLU), AveragePooling2D, Flatten of the NHWC map (a Transpose to NHWC stays before the Reshape), "
           "Dropout, Dense-ReLU-Dense")
    keras.utils.set_random_seed(SEED)
    export(build(keras_mlp()), "keras_mlp.tf2onnx.onnx", (64,),
           "Keras MLP 64-64-48-32-10: Dense as MatMul + Add bias, ReLU, Tanh, Softmax output")


if __name__ == "__main__":
    main()
