"""Typed records passed between the stages: what to prune, towards which target, scored how, run where.

Each record groups the options of one concern, so that :func:`spa.prune`, :func:`spa.pipeline.sweep.sweep`
and the CLI pass four objects instead of twenty keywords. The CLI builds each one once from its argument
group (:mod:`spa.cli.commands.common`); Python callers build the ones they need::

    spa.prune("m.onnx", 0.4, "l1", selection=Selection(round_to=8, exclude=["head*"]))

The records sit in the first layer (they import nothing from SPA) so every stage can take them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: ``(stage, done, total)``, called as work advances (a progress bar).
Progress = Callable[[str, int, int], None]
#: Group id -> the indices of the units (channels, heads) that survive in that group.
KeptUnits = dict[int, np.ndarray]
#: The values of a model's inputs (or of calibration data), keyed by input name.
Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Selection:
    """Which units go and where: the ranking, the rounding of kept counts, what is never pruned.

    ``round_to`` keeps channel counts multiples of N (``"auto"``: 8 in groups of at least 16);
    ``exclude`` holds glob patterns of nodes or initializers whose groups are never pruned;
    ``prune_norm_axes`` also prunes groups a normalisation reduces over (approximate);
    ``prune_heads`` (whole, dims, none) is the granularity of attention heads
    (:mod:`spa.analysis.rules.attention`).
    """

    global_ranking: bool = False
    round_to: int | str = 1
    exclude: tuple[str, ...] = ()
    prune_norm_axes: bool = False
    prune_heads: str = "whole"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(self.exclude))  # a list from argparse or a caller


@dataclass(frozen=True)
class Target:
    """A budget that replaces the ratio: at most one of the four is set.

    ``macs`` and ``params`` are fractions of the original (estimated exactly); ``latency`` is in
    milliseconds and ``speedup`` a factor, both measured in onnxruntime (:mod:`spa.pipeline.targets`).
    """

    macs: float | None = None
    params: float | None = None
    latency: float | None = None
    speedup: float | None = None

    def given(self) -> list[float]:
        """The values that are set (more than one is an error the pipeline reports)."""
        return [t for t in (self.macs, self.params, self.latency, self.speedup) if t is not None]

    @property
    def by_cost(self) -> bool:
        """A MACs or parameter budget: estimated, nothing is timed."""
        return self.macs is not None or self.params is not None

    @property
    def by_time(self) -> bool:
        """A latency or speedup budget: candidates are timed."""
        return self.latency is not None or self.speedup is not None


@dataclass(frozen=True)
class Scoring:
    """What the criterion is given: its seed and the data some criteria need.

    ``stats`` (auto, moments, synthetic, data) and ``calib`` (arrays keyed by input name) configure
    obspa, fluctuation and activation; the gradient criteria take ``calib`` plus ``labels`` (one target
    per sample) and ``loss`` (``"cross-entropy"`` or ``"mse"``). ``calib_name`` names the data in
    messages (the file it came from). ``seed`` also seeds every random input SPA makes.
    """

    seed: int = 0
    stats: str = "auto"
    calib: Arrays | None = field(default=None, compare=False)
    labels: np.ndarray | None = field(default=None, compare=False)
    loss: str = "cross-entropy"
    calib_name: str = "--calib"

    def criterion_options(self) -> dict[str, object]:
        """The options a criterion may declare (:func:`spa.criteria.get_criterion` passes each its own)."""
        return {"stats": self.stats, "calib": self.calib, "labels": self.labels, "loss": self.loss}


@dataclass(frozen=True)
class Runtime:
    """Where and how the models run: onnxruntime ``device`` and intra-op ``threads`` (0: its choice),
    ``shapes`` (input name -> typical whole shape; unstated sizes are derived, :mod:`spa.model.sizes`)
    and a ``progress`` callback."""

    device: str = "cpu"
    threads: int = 0
    shapes: Mapping[str, Sequence[int]] | None = field(default=None, compare=False)
    progress: Progress | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Bench:
    """Timing in onnxruntime: ``warmup`` untimed and ``runs`` timed runs per model."""

    warmup: int = 3
    runs: int = 20
