"""The pruning report: figures before and after, groups, timings, verification."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spa.check.verify import Verification
from spa.model.metrics import Cost


@dataclass
class BlockedGroup:
    group: int
    name: str
    units: int
    reason: str


@dataclass
class TargetOutcome:
    """A pruning target met: what was asked, the ratio found, what was achieved.

    ``kind`` is macs, params (fractions of the original; ``estimated`` before the rewrite, ``achieved``
    counted on the pruned model), latency (ms) or speedup (a factor), measured; ``details`` holds what
    the latency search measured (:func:`spa.pipeline.targets.find_ratio_for_latency`).
    """

    kind: str
    target: float
    ratio: float
    achieved: float
    estimated: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``target`` object: kind, target, ratio, [estimated,] achieved, then the details."""
        d: dict[str, Any] = {"kind": self.kind, "target": self.target, "ratio": self.ratio}
        if self.estimated is not None:
            d["estimated"] = self.estimated
        return {**d, "achieved": self.achieved, **self.details}


@dataclass
class Report:
    model: str
    criterion: str
    ratio: float
    before: Cost
    after: Cost
    groups_total: int = 0
    groups_prunable: int = 0
    groups_pruned: int = 0
    groups_unchanged: int = 0
    blocked: list[BlockedGroup] = field(default_factory=list)
    #: prunable groups that keep every unit, each with the reason (rounding, a ratio too small)
    unchanged: list[BlockedGroup] = field(default_factory=list)
    units_removed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    output: str | None = None
    #: With ``verify_result``: the masked-equivalence check of the pruned model.
    verification: Verification | None = None
    #: With a target (--target-macs, ...): what was asked, the ratio found, what was achieved.
    target: TargetOutcome | None = None
    #: The input sizes MACs were counted and the model checked at (:meth:`spa.model.sizes.InputSizes.to_dict`).
    sizes: dict[str, Any] | None = None
    #: A compensating criterion (obspa): how each consumer's refit was chosen on held-out samples
    #: (:meth:`spa.criteria.compensation.Compensation.summary`).
    compensation: dict[str, Any] | None = None

    @property
    def nothing_to_prune(self) -> bool:
        return self.groups_prunable == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.verification is not None:
            d["verification"] = {**self.verification.to_dict(), "summary": self.verification.summary()}
        if self.target is not None:
            d["target"] = self.target.to_dict()
        d["nothing_to_prune"] = self.nothing_to_prune
        return d

    def table(self) -> str:
        rows = [
            ("params", self.before.params, self.after.params),
            ("MACs", self.before.macs, self.after.macs),
            ("size (bytes)", self.before.size_bytes, self.after.size_bytes),
        ]
        lines = [f"{'':14}{'before':>16}{'after':>16}{'change':>10}"]
        for name, old, new in rows:
            change = f"{(new - old) / old * 100:+.1f}%" if old > 0 else "-"
            lines.append(f"{name:14}{_fmt(old):>16}{_fmt(new):>16}{change:>10}")
        lines.append(
            f"groups: {self.groups_total} found, {self.groups_pruned} pruned, "
            f"{len(self.blocked)} blocked, {self.groups_unchanged} unchanged; "
            f"{self.units_removed} channel units removed"
        )
        if self.sizes is not None:
            lines.append(str(self.sizes.get("summary", "")))
        for b in self.blocked[:10]:
            lines.append(f"  blocked group {b.group} ({b.name}, {b.units} units): {b.reason}")
        if len(self.blocked) > 10:
            lines.append(f"  ... and {len(self.blocked) - 10} more blocked groups (see `spa groups`)")
        for u in self.unchanged[:10]:
            lines.append(f"  unchanged group {u.group} ({u.name}, {u.units} units): {u.reason}")
        if len(self.unchanged) > 10:
            lines.append(f"  ... and {len(self.unchanged) - 10} more unchanged groups (see the JSON report)")
        if self.target is not None:
            lines.append(target_line(self.target.to_dict()))
        if self.compensation is not None:
            lines.append(compensation_line(self.compensation))
        if self.verification is not None:
            lines.append(self.verification.summary())
        total = sum(self.seconds.values())
        lines.append(f"time: {total:.2f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items()) + ")")
        return "\n".join(lines)


def target_line(t: dict[str, Any]) -> str:
    """The console line for a pruning target: what was asked, the ratio found, what was achieved."""
    if t["kind"] in ("latency", "speedup"):
        asked = f"latency <= {t['target']:g} ms" if t["kind"] == "latency" else f"speedup >= {t['target']:g}x"
        return (f"target: {asked} -> ratio {t['ratio']:.3f}, measured {t['measured_ms']:.3f} ms against "
                f"{t['baseline_ms']:.3f} ms for the original ({t['measured_speedup']:.2f}x, ideal "
                f"{t['ideal_speedup']:.2f}x; {len(t['trials'])} candidate{'s' * (len(t['trials']) != 1)} timed, {t['runs']} runs each)")
    return (f"target: {t['kind']} <= {t['target']:.1%} of the original -> ratio {t['ratio']:.3f}, "
            f"achieved {t['achieved']:.1%}")


def compensation_line(c: dict[str, Any]) -> str:
    """The console line for a compensated prune: what each consumer got, and what it did on
    held-out samples."""
    ratio = c.get("held_out_error_ratio")
    effect = (f"; held-out layer error {ratio:.2f}x that of not compensating" if ratio is not None else "")
    drift = c.get("held_out_output_drift") or {}
    worst = max(drift.items(), key=lambda kv: kv[1], default=None)
    out = (f"; output drift on held-out synthetic samples: '{worst[0]}' {worst[1]:.3g} (relative)"
           if worst is not None else "")
    return (f"compensation: {c['consumers']} consumers: {c['refitted']} refitted, {c['bias_only']} bias only, "
            f"{c['left_sliced']} left as sliced{effect}{out}")


def _fmt(n: int) -> str:
    return f"{n:,}" if n >= 0 else "?"
