"""``spa prune --markdown report.md``: a summary fit for a pull-request comment.

It holds a verdict line, a before/after table (params, MACs, size; latency with ``--bench``;
top-1 accuracy with ``--eval``), the gates with value, limit and result, the output drift, the
groups pruned and blocked (the first :data:`MAX_ROWS` of each, reasons shortened), the settings
and the command line. It is rendered from the same dict as ``--report`` JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_ROWS = 15
MAX_CELL = 120


def _cell(text: object, limit: int = MAX_CELL) -> str:
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def _code(text: object, limit: int = 80) -> str:
    return "`" + _cell(str(text).replace("`", "'"), limit) + "`"


def _compact(n: float | None) -> str:
    if n is None or n < 0:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:,.0f}"


def _bytes(n: float | None) -> str:
    if n is None or n < 0:
        return "?"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _change(before: float, after: float) -> str:
    return f"{(after - before) / before * 100:+.1f}%" if before and before > 0 and after >= 0 else "-"


def render(report: Mapping[str, Any], *, command: str, plan_groups: Sequence[Mapping[str, Any]] = ()) -> str:
    """The Markdown text for ``report`` (the ``--report`` dict, with ``gates``/``bench``/... if any)."""
    lines: list[str] = []
    gates = list(report.get("gates") or [])
    n_fail = sum(not g["passed"] for g in gates)
    model = report.get("model", "model")
    if not gates:
        lines.append(f"### SPA pruning report: {_code(model)}")
    elif n_fail:
        counts = f"{n_fail} of {len(gates)} gates" if len(gates) > 1 else "gate"
        lines.append(f"### ❌ SPA: {counts} failed for {_code(model)}")
    else:
        lines.append(f"### ✅ SPA: {'all ' if len(gates) > 1 else ''}{len(gates)} "
                     f"gate{'s' if len(gates) > 1 else ''} passed for {_code(model)}")
    lines.append("")
    lines += _settings(report)
    lines.append("")

    b, a = report["before"], report["after"]
    lines += ["| | before | after | change |", "|---|---:|---:|---:|"]
    lines.append(f"| params | {_compact(b['params'])} | {_compact(a['params'])} | {_change(b['params'], a['params'])} |")
    lines.append(f"| MACs | {_compact(b['macs'])} | {_compact(a['macs'])} | {_change(b['macs'], a['macs'])} |")
    lines.append(f"| size | {_bytes(b['size_bytes'])} | {_bytes(a['size_bytes'])} | "
                 f"{_change(b['size_bytes'], a['size_bytes'])} |")
    bench = report.get("bench")
    if bench:
        mb, ma = bench["before"]["median_ms"], bench["after"]["median_ms"]
        sp = bench.get("measured_speedup")
        lines.append(f"| latency (median) | {mb:.3f} ms | {ma:.3f} ms | "
                     f"{f'speedup {sp:.2f}x' if sp else '-'} |")
    acc = report.get("accuracy")
    if acc:
        ab, aa = acc.get("before"), acc.get("after")
        delta = f"{(aa - ab) * 100:+.1f} pt" if ab is not None and aa is not None else "-"
        lines.append(f"| top-1 accuracy | {_pct(ab)} | {_pct(aa)} | {delta} |")
    lines.append("")
    sizes = report.get("sizes")
    if sizes:
        also = ", ".join(_code(_shapes(s)) for s in sizes["checked"][1:])
        lines.append(f"Input sizes: {_code(_shapes(sizes['typical']))} (MACs and checks)"
                     + (f"; the pruned model also ran at {also}." if also else "."))
    if bench:
        ideal = bench.get("ideal_speedup")
        lines.append(f"Latency: onnxruntime {bench['providers'][0]}, batch {bench['batch']}, median of "
                     f"{bench['runs']} runs; ideal speedup from MACs {f'{ideal:.2f}x' if ideal else '-'}.")
    if acc:
        lines.append(f"Accuracy: top-1 on {acc.get('samples', '?')} labelled samples from {_code(acc.get('data', '?'))}.")
    drift = report.get("drift")
    if drift:
        src = "seeded random inputs" if drift.get("data") == "random" else _code(drift.get("data"))
        lines.append(f"Output drift against the original: **{drift['value']:.4g}** "
                     f"(max over outputs of max\\|pruned − original\\| / max\\|original\\|; "
                     f"{drift.get('samples', '?')} samples of {src}).")
    v = report.get("verification")
    if v:
        lines.append(f"Verification: {_cell(v.get('summary', ''), 300)}.")
    if bench or acc or drift or v:
        lines.append("")

    if gates:
        lines += ["| gate | value | limit | result |", "|---|---:|---:|:---:|"]
        for g in gates:
            lines.append(f"| `{g['name']}` | {_gate_value(g['name'], g['value'])} | {g['op'].replace('<=', '≤').replace('>=', '≥')} "
                         f"{_gate_value(g['name'], g['limit'])} | {'✅ pass' if g['passed'] else '❌ **FAIL**'} |")
        lines.append("")

    lines += _groups(report, plan_groups)
    lines += ["", "<sub>Command:</sub>", "", "```", command, "```", ""]
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _gate_value(name: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if name in ("max-params", "max-macs"):
        return _compact(v)
    if name == "min-speedup":
        return f"{v:.2f}x"
    if name == "min-accuracy":
        return f"{v:.2%}"
    return f"{v:.4g}"


def _settings(report: Mapping[str, Any]) -> list[str]:
    t = report.get("target")
    if t and t["kind"] == "latency":
        how = f"target latency ≤ {t['target']:g} ms → ratio {t['ratio']:.3f} ({t['measured_ms']:.3f} ms measured)"
    elif t and t["kind"] == "speedup":
        how = f"target speedup ≥ {t['target']:g}x → ratio {t['ratio']:.3f} ({t['measured_speedup']:.2f}x measured)"
    else:
        how = (f"target {t['kind']} ≤ {t['target']:.1%} → ratio {t['ratio']:.3f}" if t
               else f"ratio {report.get('ratio', 0):g}")
    parts = [f"criterion `{report.get('criterion')}`", how]
    out = report.get("output")
    parts.append(f"output {_code(out)}" if out else "no model written")
    if report.get("config"):
        parts.append(f"settings from {_code(report['config'])}")
    return ["Settings: " + ", ".join(parts) + "."]


def _groups(report: Mapping[str, Any], plan_groups: Sequence[Mapping[str, Any]]) -> list[str]:
    blocked = list(report.get("blocked") or [])
    lines = [f"**Groups:** {report.get('groups_total', 0)} found, {report.get('groups_pruned', 0)} pruned, "
             f"{len(blocked)} blocked, {report.get('groups_unchanged', 0)} unchanged; "
             f"{report.get('units_removed', 0)} channel units removed."]
    pruned = [g for g in plan_groups if g.get("status") == "pruned"]
    if pruned:
        lines += ["", f"<details><summary>Pruned groups ({len(pruned)})</summary>", "",
                  "| group | units kept | weight |", "|---:|---:|---|"]
        for g in pruned[:MAX_ROWS]:
            lines.append(f"| {g['id']} | {g['kept_units']} of {g['units']} | {_code(_label(g))} |")
        if len(pruned) > MAX_ROWS:
            lines.append(f"| … | | {len(pruned) - MAX_ROWS} more (see `--plan`) |")
        lines += ["", "</details>"]
    if blocked:
        lines += ["", f"<details><summary>Blocked groups ({len(blocked)})</summary>", "",
                  "| group | name | units | reason |", "|---:|---|---:|---|"]
        for g in blocked[:MAX_ROWS]:
            lines.append(f"| {g['group']} | {_code(g['name'], 60)} | {g['units']} | {_cell(g['reason'])} |")
        if len(blocked) > MAX_ROWS:
            lines.append(f"| … | | | {len(blocked) - MAX_ROWS} more (run `spa groups`) |")
        lines += ["", "</details>"]
    return lines


def _label(group: Mapping[str, Any]) -> str:
    """A readable member of a plan group: its first sliced weight (``sliced``), else its first member."""
    members = list(group.get("members") or [])
    sliced = set(group.get("sliced") or ())
    hits = [m for m in members if m.rsplit(":", 1)[0] in sliced]
    producers = [m for m in hits if m.endswith("weight:0")]  # the filters that make the channels
    return (producers or hits or members or ["?"])[0]


def _shapes(shapes: dict[str, list[int]]) -> str:
    return " ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items())
