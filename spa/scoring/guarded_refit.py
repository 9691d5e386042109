"""A consumer's refit that is never worse than not refitting, judged on samples it was not fitted on.

Sequential compensation (:mod:`criteria.obspa`) refits each consumer ``y = W x + b`` so that its
output on the *pruned* model's input ``x'`` (kept columns only) reproduces its output on the
original input ``x``. A plain least-squares refit on statistics that are few or unlike the
model's real inputs (synthetic samples, no data) can be far worse than leaving the sliced weights
alone, so the refit here is a family, chosen on held-out rows:

* ``none``: the sliced weights ``W_k`` and the bias as they are (what ``l1`` would write);
* ``bias``: ``W_k`` with the bias corrected by the expected change of the output (the removed
  channels' mean contribution, and the drift of the kept ones): the safe floor;
* ``ridge``: weights pulled toward ``W_k`` with strength ``α`` and a free bias,
  ``W' = (C + α W_k D)(Σ + α D)⁻¹``, ``b' = E[t] − W' E[x']`` (``Σ`` the covariance of ``x'``,
  ``D`` its diagonal, so the pull is the same whatever a column's scale; ``C`` the
  cross-covariance of the target ``t = W x + b`` with ``x'``); a small ``α`` is the plain
  least-squares refit, a large one tends to ``bias``.

The rows are split by position (they are ordered by sample, so the last :data:`HOLDOUT` of them
come from other samples than the rest); each candidate is fitted on the first part and scored by
its mean squared output error on the held-out part; the best one (the simplest on a tie) is
refitted on all rows. The choice is therefore never worse than ``none`` on the held-out rows.
Without a bias slot (a MatMul whose bias is not its own) the family has no free bias and no
``bias`` member.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Fraction of the rows (the last ones) held out to choose the refit.
HOLDOUT = 0.25
#: Ridge strengths, relative to each input column's variance (the strongest, closest to the sliced
#: weights, first: candidates are tried simplest first).
ALPHAS = (1.0, 1e-1, 1e-2, 1e-4)
#: Fewer rows than this on either side of the split: no choice is possible; the weights stay sliced.
MIN_ROWS = 4
#: The members of the family, simplest first.
KINDS = ("none", "bias", "ridge")


@dataclass(frozen=True)
class RefitChoice:
    """What was chosen for one consumer and how it did on the held-out rows."""

    #: ``none``, ``bias`` or ``ridge``
    kind: str
    #: ``α`` of a ridge refit (None otherwise)
    alpha: float | None
    #: held-out mean squared output error of the choice, and of ``none``
    error: float
    error_none: float

    @property
    def changed(self) -> bool:
        return self.kind != "none"

    def to_dict(self) -> dict[str, object]:
        gain = self.error / self.error_none if self.error_none > 0 else None
        return {"kind": self.kind, "alpha": self.alpha, "held_out_error": self.error,
                "held_out_error_uncompensated": self.error_none, "error_ratio": gain}


def _target(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The original outputs ``W x + b`` (float64) of rows ``x``."""
    return x.astype(np.float64) @ w[:, :-1].T + w[:, -1]


@dataclass
class _Sums:
    """Sums over rows of ``y`` (kept columns) and targets ``t``, both shifted by fixed vectors
    (the means of all rows) so that the products are well conditioned in float32."""

    n: int
    sy: np.ndarray  # (K,)
    st: np.ndarray  # (outputs,)
    syy: np.ndarray  # (K, K)
    sty: np.ndarray  # (outputs, K)

    @classmethod
    def of(cls, ys: np.ndarray, ts: np.ndarray) -> _Sums:
        return cls(len(ys), ys.sum(axis=0, dtype=np.float64), ts.sum(axis=0),
                   (ys.T @ ys).astype(np.float64), ts.T @ ys)

    def __add__(self, other: _Sums) -> _Sums:
        return _Sums(self.n + other.n, self.sy + other.sy, self.st + other.st, self.syy + other.syy,
                     self.sty + other.sty)


def _fit(s: _Sums, mu_y: np.ndarray, mu_t: np.ndarray, wk: np.ndarray, b: np.ndarray, alpha: float | None,
         bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(W', b')`` of the ``ridge`` member ``alpha`` (None: ``bias``) from the sums of some rows."""
    my, mt = s.sy / s.n, s.st / s.n  # shifted means
    mean_y = my + mu_y
    if alpha is None:
        return wk, (mt + mu_t) - wk @ mean_y
    sigma = s.syy / s.n - np.outer(my, my)  # covariance of y
    if bias:
        cross = s.sty / s.n - np.outer(mt, my)
    else:  # no free bias: second moments about zero, targets less the fixed bias
        sigma = sigma + np.outer(mean_y, mean_y)
        cross = s.sty / s.n - np.outer(mt, my) + np.outer(mt + mu_t - b, mean_y)
    # The penalty is scale-free: column j pays alpha * var_j per unit of squared change.
    d = np.maximum(np.diag(sigma), 1e-12 * max(float(np.mean(np.diag(sigma))) if sigma.size else 0.0, 1e-30))
    a = sigma + np.diag(alpha * d)
    rhs = (cross + wk * (alpha * d)).T
    try:
        new = np.linalg.solve(a, rhs).T
    except np.linalg.LinAlgError:
        new = np.linalg.lstsq(a, rhs, rcond=None)[0].T
    return new, ((mt + mu_t) - new @ mean_y) if bias else b


def guarded_refit(w: np.ndarray, keep_cols: np.ndarray, x: np.ndarray, y: np.ndarray, bias: bool = True
                  ) -> tuple[np.ndarray, RefitChoice]:
    """Weights for the kept columns of a changed input, chosen on held-out rows (module docstring).

    ``w`` is the augmented ``[W | b]`` (float64); ``x`` holds rows of the consumer's input in the
    original model (all columns), ``y`` the same rows in the pruned model restricted to
    ``keep_cols``; ``bias`` says whether a bias can be written. Returns the augmented weights,
    full width, removed columns zero, and the choice.
    """

    n = len(x)
    wk, b = w[:, keep_cols], w[:, -1]
    t = _target(w, x)
    cut = n - int(round(n * HOLDOUT))
    out = np.zeros_like(w)
    out[:, -1] = b
    if cut < MIN_ROWS or n - cut < MIN_ROWS:
        out[:, keep_cols] = wk
        return out, RefitChoice("none", None, float("nan"), float("nan"))
    members: list[tuple[str, float | None]] = [("none", None)]
    if bias:
        members.append(("bias", None))
    members += [("ridge", a) for a in ALPHAS]
    mu_y, mu_t = y.mean(axis=0, dtype=np.float64), t.mean(axis=0)
    ys = y - mu_y.astype(y.dtype)
    fit = _Sums.of(ys[:cut], t[:cut] - mu_t)
    held = _Sums.of(ys[cut:], t[cut:] - mu_t)
    y_held = y[cut:].astype(np.float64)
    errors = []
    for kind, alpha in members:
        wf, bf = (wk, b) if kind == "none" else _fit(fit, mu_y, mu_t, wk, b, alpha, bias)
        errors.append(float(np.mean((y_held @ wf.T + bf - t[cut:]) ** 2)))
    best = int(np.argmin(errors))  # the first (simplest) of equal errors
    kind, alpha = members[best]
    wf, bf = (wk, b) if kind == "none" else _fit(fit + held, mu_y, mu_t, wk, b, alpha, bias)
    out[:, keep_cols] = wf
    out[:, -1] = bf
    return out, RefitChoice(kind, alpha, errors[best], errors[0])
