"""Jittered 32x32 handwritten digits: a small, download-free image-classification task.

The source is scikit-learn's bundled ``load_digits`` (1,797 grey 8x8 images, values 0..16, ten
classes). Every image is resampled to a **32x32, 1-channel** image through a random affine map:

* the 8x8 digit is drawn about 24 pixels wide (bilinear interpolation), then
* scaled by a factor in [0.75, 1.15], rotated by up to ±15 degrees, shifted by up to ±4 pixels,
* and given Gaussian pixel noise (sigma 0.05 on the 0..1 scale).

Values are then standardised with the fixed constants :data:`MEAN` and :data:`STD`. One channel
is used because the source is grey: a replicated 3-channel input would add nothing (SPA never
prunes a model's input channels).

The train/test split is fixed (stratified, 25 % test, ``split_seed``): 1,347 training and 450 test
digits. The test images are jittered once with a fixed seed; training code draws a fresh jitter
of the training digits every epoch (:func:`train_epoch`). Everything is deterministic given the
seeds and needs only numpy, scipy and scikit-learn.

    from benchmarks.digits import test_set, calibration_batch
    x, y = test_set()                 # float32 (450, 1, 32, 32), int64 (450,)
    calib = calibration_batch(128)    # float32 (128, 1, 32, 32), training digits
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

IMAGE_SIZE = 32
CHANNELS = 1
NUM_CLASSES = 10
#: Standardisation constants (mean and std of jittered training images on the 0..1 scale).
MEAN = 0.139
STD = 0.27
#: Bumped whenever the data pipeline changes, so that cached models are retrained.
DATA_VERSION = 1

_SOURCE = 8  # source images are 8x8
_DRAWN = 24.0  # nominal width of the digit in the 32x32 output
_SCALE = (0.75, 1.15)
_ROTATION_DEG = 15.0
_SHIFT_PX = 4.0
_NOISE = 0.05

_TEST_JITTER_SEED = 1_000_003
_CALIB_JITTER_SEED = 2_000_003


@functools.lru_cache(maxsize=4)
def _split(split_seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw 8x8 images (0..1) and labels: ``x_train, y_train, x_test, y_test``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.25, random_state=split_seed, stratify=labels
    )
    for a in (x_tr, x_te, y_tr, y_te):
        a.flags.writeable = False
    return x_tr, y_tr, x_te, y_te


def jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resample ``(N, 8, 8)`` images in 0..1 to standardised float32 ``(N, 1, 32, 32)``."""
    n = len(images)
    scale = rng.uniform(*_SCALE, size=n)
    angle = np.deg2rad(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, size=n))
    shift = rng.uniform(-_SHIFT_PX, _SHIFT_PX, size=(n, 2))
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    centre_out = (IMAGE_SIZE - 1) / 2.0
    centre_in = (_SOURCE - 1) / 2.0
    for i in range(n):
        # output (row, col) -> input (row, col): undo shift, rotation and scale, then map the
        # nominal 24-px digit back onto the 8 source pixels.
        c, s = np.cos(angle[i]), np.sin(angle[i])
        rot = np.array([[c, -s], [s, c]])
        matrix = rot / (scale[i] * _DRAWN / _SOURCE)
        offset = centre_in - matrix @ (np.array([centre_out, centre_out]) + shift[i])
        out[i] = ndimage.affine_transform(
            images[i], matrix, offset=offset, output_shape=(IMAGE_SIZE, IMAGE_SIZE),
            order=1, mode="constant", cval=0.0,
        )
    out += rng.normal(0.0, _NOISE, size=out.shape).astype(np.float32)
    out = (out - MEAN) / STD
    return out[:, None].astype(np.float32, copy=False)


@functools.lru_cache(maxsize=4)
def test_set(split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fixed test images ``(450, 1, 32, 32)`` float32 and labels ``(450,)`` int64."""
    _, _, x_te, y_te = _split(split_seed)
    x = jitter(x_te, np.random.default_rng(_TEST_JITTER_SEED + split_seed))
    x.flags.writeable = False
    return x, y_te


def train_epoch(epoch: int, seed: int = 0, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fresh jitter of the 1,347 training digits for ``epoch`` (deterministic), in original order."""
    x_tr, y_tr, _, _ = _split(split_seed)
    rng = np.random.default_rng([seed, epoch, split_seed])
    return jitter(x_tr, rng), y_tr.copy()


def calibration_batch(n: int = 128, seed: int = 0, split_seed: int = 0) -> np.ndarray:
    """``n`` jittered *training* images as float32 NCHW ``(n, 1, 32, 32)``, chosen by ``seed``.

    Use it as calibration data for data-aware criteria; it never contains test images. ``n``
    larger than the training set repeats digits (with different jitter).
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    x_tr, _, _, _ = _split(split_seed)
    rng = np.random.default_rng([_CALIB_JITTER_SEED, seed, split_seed])
    idx = rng.permutation(len(x_tr))
    if n > len(idx):
        idx = np.concatenate([idx, rng.integers(0, len(x_tr), size=n - len(idx))])
    return jitter(x_tr[idx[:n]], rng)


__all__ = [
    "CHANNELS", "DATA_VERSION", "IMAGE_SIZE", "MEAN", "NUM_CLASSES", "STD",
    "calibration_batch", "jitter", "test_set", "train_epoch",
]
