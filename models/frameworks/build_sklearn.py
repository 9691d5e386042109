"""Build the scikit-learn zoo model with skl2onnx.

Run from the repository root in the scikit-learn venv (see models/README.md)::

    /work/venvs/skl/bin/python -m models.frameworks.build_sklearn

Trains an ``MLPClassifier`` (64 -> 64 -> 32 -> 10, ReLU, Adam, ``random_state=0``) on
scikit-learn's bundled ``load_digits`` (first 1400 images; the other 397 are held out) and
writes ``models/zoo/frameworks/sklearn_mlp.skl2onnx.onnx`` with its manifest entry. The ONNX
model has two outputs: ``label`` (int64 class) and ``probabilities`` (a float tensor, since
ZipMap is switched off).
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
import skl2onnx
import sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from models.frameworks.common import pin_hash_seed, save_checked

SEED = 0
OPSET = 17
TRAIN = 1400


def train() -> tuple[MLPClassifier, np.ndarray, np.ndarray]:
    """The classifier, and the held-out images (float32, scaled to [0, 1]) and labels."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[:TRAIN], y[:TRAIN])
    return clf, x[TRAIN:], y[TRAIN:]


def main() -> None:
    pin_hash_seed("models.frameworks.build_sklearn")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clf, x_test, y_test = train()
    proto = skl2onnx.convert_sklearn(
        clf, "sklearn_mlp", [("input", FloatTensorType([None, 64]))], target_opset={"": OPSET, "ai.onnx.ml": 3},
        options={id(clf): {"zipmap": False}},
    )
    feeds = x_test[:16]
    expected = [clf.predict(feeds).astype(np.int64), clf.predict_proba(feeds).astype(np.float32)]
    accuracy = float(np.mean(clf.predict(x_test) == y_test))
    info = {
        "model": "sklearn_mlp",
        "framework": "scikit-learn",
        "framework_version": f"scikit-learn {sklearn.__version__}",
        "exporter": "skl2onnx",
        "exporter_version": skl2onnx.__version__,
        "builder": "python -m models.frameworks.build_sklearn",
        "seed": SEED,
        "what": "MLPClassifier(hidden_layer_sizes=(64, 32)) trained on load_digits[:1400]: MatMul + Add + Relu "
                "layers, Softmax, ArgMax -> label; outputs label (int64) and probabilities (ZipMap off)",
        "params": int(sum(w.size for w in clf.coefs_) + sum(b.size for b in clf.intercepts_)),
        "heldout_accuracy": round(accuracy, 4),
        "heldout_images": int(len(y_test)),
    }
    save_checked(proto, "sklearn_mlp.skl2onnx.onnx", {"input": feeds}, expected, info)


if __name__ == "__main__":
    main()
