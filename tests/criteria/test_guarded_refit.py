"""The refit of a consumer is chosen on held-out rows and is never worse there than not refitting."""

from __future__ import annotations

import numpy as np
import pytest

from spa.scoring.guarded_refit import HOLDOUT, guarded_refit


def _problem(rng: np.random.Generator, n: int, cols: int, outputs: int, mixing: float, noise: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of an original input ``x`` whose columns share ``mixing`` of a common factor, the
    pruned world's ``y`` (``x`` plus ``noise``) and augmented weights."""
    common = rng.standard_normal((n, 1))
    x = (mixing * common + rng.standard_normal((n, cols)) + 0.5).astype(np.float32)
    y = (x + noise * rng.standard_normal(x.shape)).astype(np.float32)
    w = rng.standard_normal((outputs, cols + 1))
    return x, y, w


def _held_out_error(w_aug: np.ndarray, keep: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    cut = len(x) - int(round(len(x) * HOLDOUT))
    target = x[cut:].astype(np.float64) @ w[:, :-1].T + w[:, -1]
    got = y[cut:, :][:, keep].astype(np.float64) @ w_aug[:, keep].T + w_aug[:, -1]
    return float(np.mean((got - target) ** 2))


def test_with_plenty_of_rows_it_is_the_least_squares_refit() -> None:
    rng = np.random.default_rng(0)
    x, y, w = _problem(rng, 4000, 6, 2, mixing=2.0, noise=0.3)
    keep = np.array([0, 2, 3, 5])
    new, choice = guarded_refit(w, keep, x, y[:, keep])
    assert choice.kind == "ridge" and choice.alpha is not None and choice.alpha <= 1e-2
    target = x.astype(np.float64) @ w[:, :-1].T + w[:, -1]
    design = np.concatenate([y[:, keep], np.ones((len(y), 1))], axis=1).astype(np.float64)
    want = np.linalg.lstsq(design, target, rcond=None)[0].T
    np.testing.assert_allclose(new[:, np.append(keep, 6)], want, rtol=2e-2, atol=2e-2)
    assert not new[:, [1, 4]].any()
    assert choice.error < 0.5 * choice.error_none  # the removed columns' shared factor is recovered


def test_few_rows_and_independent_columns_give_a_bias_correction_not_an_overfit_refit() -> None:
    # The removed columns carry nothing the kept ones predict (independent), only a mean: the
    # best held-out fix is the bias; an unregularised refit on 48 rows of 40 columns overfits.
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((48, 40)) + 1.0).astype(np.float32)
    w = rng.standard_normal((5, 41))
    keep = np.arange(20)
    new, choice = guarded_refit(w, keep, x, x[:, keep])
    assert choice.kind in ("bias", "ridge")
    if choice.kind == "ridge":
        assert choice.alpha is not None and choice.alpha >= 1e-1  # strongly pulled toward the sliced weights
    assert choice.error < choice.error_none
    # and on fresh samples of the same inputs it beats leaving the weights as sliced
    fresh = (rng.standard_normal((2000, 40)) + 1.0).astype(np.float32)
    target = fresh.astype(np.float64) @ w[:, :-1].T + w[:, -1]
    got = fresh[:, keep].astype(np.float64) @ new[:, keep].T + new[:, -1]
    sliced = fresh[:, keep].astype(np.float64) @ w[:, keep].T + w[:, -1]
    assert np.mean((got - target) ** 2) < np.mean((sliced - target) ** 2)


@pytest.mark.parametrize("seed", range(6))
def test_never_worse_than_the_sliced_weights_on_the_held_out_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, cols = int(rng.integers(12, 300)), int(rng.integers(3, 60))
    x, y, w = _problem(rng, n, cols, int(rng.integers(1, 8)), mixing=float(rng.uniform(0, 3)),
                       noise=float(rng.uniform(0, 2)))
    keep = np.sort(rng.choice(cols, size=max(1, cols // 2), replace=False))
    new, choice = guarded_refit(w, keep, x, y[:, keep], bias=bool(seed % 2))
    sliced = np.zeros_like(w)
    sliced[:, keep], sliced[:, -1] = w[:, keep], w[:, -1]
    assert choice.error <= choice.error_none
    assert choice.error_none == pytest.approx(_held_out_error(sliced, keep, x, y, w))
    removed = np.setdiff1d(np.arange(cols), keep)
    assert not new[:, removed].any()
    if not seed % 2:  # no bias slot: the bias is never changed, and "bias" is not a choice
        assert choice.kind != "bias"
        np.testing.assert_array_equal(new[:, -1], w[:, -1])
    if choice.kind == "none":
        np.testing.assert_array_equal(new, sliced)


def test_too_few_rows_leave_the_weights_sliced() -> None:
    rng = np.random.default_rng(2)
    x, y, w = _problem(rng, 6, 4, 2, mixing=1.0, noise=0.1)
    keep = np.array([0, 1])
    new, choice = guarded_refit(w, keep, x, y[:, keep])
    assert choice.kind == "none" and not choice.changed
    np.testing.assert_array_equal(new[:, [0, 1, 4]], w[:, [0, 1, 4]])
    assert not new[:, [2, 3]].any()
