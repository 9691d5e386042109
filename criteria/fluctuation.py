"""``fluctuation``: variance of each input feature times the squared norm of its weight column,
with mean-bias compensation (FLAP, An et al. 2024).

This is OBSPA's independent-feature model with the mean and variance measured on activations:
from ``--calib`` when given, else from synthetic ``N(0, 1)`` inputs. A unit's score is the sum,
over every consumer column it owns, of ``Var(x_j) · ‖W_:j‖²``. After selection, each consumer's
bias absorbs the mean contribution of its removed columns: ``b += W_P · E[x_P]``.
"""

from __future__ import annotations

import numpy as np
from spa.criteria.obspa import ColumnStats, OBSPACriterion

from spa.analysis.consumers import Consumer
from spa.model.graph import ModelContext
from spa.scoring.stats import activation_moments


class FluctuationCriterion(OBSPACriterion):
    """Scores a unit by ``Σ Var(x_j) · ‖W_:j‖²`` over its readers' columns (FLAP), then folds the
    removed columns' mean into each reader's bias.

    Variances come from ``--calib`` inputs or, without them, synthetic ``N(0, 1)`` inputs (``--stats
    auto``/``moments`` mean exactly that); refuses ``--stats data`` without ``--calib``. Groups with
    no usable consumer fall back to ``l2`` and are not compensated, as for ``obspa``.
    """

    name = "fluctuation"

    def __init__(self, seed: int = 0, stats: str = "auto", calib: dict[str, np.ndarray] | None = None,
                 samples: int | None = None, batch: int = 32) -> None:
        if stats in ("auto", "moments"):
            stats = "data" if calib is not None else "synthetic"
        super().__init__(seed=seed, stats=stats, calib=calib, samples=samples, batch=batch)

    def _statistics(self, consumers: list[Consumer], ctx: ModelContext) -> dict[str, ColumnStats]:
        if not consumers:
            return {}
        moments = activation_moments(consumers, ctx, self._batches(ctx), seed=self.seed)
        return {k: (mean, var) for k, (mean, var, _) in moments.items()}
