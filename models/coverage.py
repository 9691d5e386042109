"""The coverage table: every committed zoo model pruned, checked and verified (``docs/coverage.md``).

    python -m models.coverage            # prune every models/zoo/**/*.onnx, write docs/coverage.md
    python -m models.coverage --check    # recompute the rows, compare them with docs/coverage.md
    python -m models.coverage FILE...    # recompute only these files' rows, keep the others' from the doc

Each file under ``models/zoo`` (found recursively, so new zoo folders show up by themselves) is
pruned with ``l1`` at :data:`RATIOS` with exact counts (``round_to=1``) and the default head
granularity. Every result is checked with the full ONNX checker, run in onnxruntime, and verified
with SPA's own masked-equivalence check (:func:`spa.check.verify.verify`). A file with groups blocked
only because a normalisation spans their axis is pruned a second time with
``prune_norm_axes=True``; its rows report the drift instead of exact equivalence. Files under
``models/zoo/defaults`` (each exporter's *default* export: BatchNorm folded, optimizer on) also
get a row of the command line's defaults (:data:`CLI_CRITERION` at :data:`CLI_RATIO`,
``--round-to auto``): checker, onnxruntime at batch 1 and :data:`BATCH`, drift, and the plan
replayed to the same weights.

The rows hold no timings, so :func:`compare_rows` can ask for them to be equal: counts, params,
MACs and verdicts exactly, drift within :data:`DRIFT_RTOL`. ``tests/test_coverage.py`` does
that per model. Needs SPA, onnx and onnxruntime; never torch or an exporter.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "models" / "zoo"
DOC = ROOT / "docs" / "coverage.md"
COMMAND = "python -m models.coverage"

RATIOS = (0.3, 0.6)
CRITERION = "l1"
SEED = 0
BATCH = 2
#: Size of every dynamic non-batch axis of an integer input (token ids, attention masks), so that
#: attention mixes positions; dynamic axes of float inputs take 1, as in ``spa verify``.
SEQ = 5
#: Drift figures of two runs agree when within this relative tolerance (plus :data:`DRIFT_ATOL`).
DRIFT_RTOL = 1e-2
DRIFT_ATOL = 1e-4
MAX_REASONS = 3
MAX_REASON_CHARS = 150

DEFAULT_MODE = "default"
NORM_MODE = "prune_norm_axes"
CLI_MODE = "cli_default"
SECTIONS = {
    DEFAULT_MODE: "Default mode",
    NORM_MODE: "Approximate mode: prune_norm_axes=True",
    CLI_MODE: "The command line's defaults on default exports",
    "files": "Zoo files",
}
#: What ``spa prune MODEL`` does with no option but the ratio (the CLI's defaults).
CLI_CRITERION = "obspa"
CLI_RATIO = 0.4
CLI_ROUND_TO = "auto"
#: Zoo folder of the exports made with each exporter's default settings.
DEFAULTS_DIR = "defaults"
RESULT_COLUMNS = ("model", "exporter", "ratio", "groups found / pruned / blocked / unchanged",
                  "params before → after", "MACs before → after", "checker", "onnxruntime", "equivalence",
                  "result", "blocked because")
CLI_COLUMNS = (*RESULT_COLUMNS[:7], "onnxruntime (batch 1 and 2)", "drift, plan replay", *RESULT_COLUMNS[9:])
FILE_COLUMNS = ("file", "exporter (MANIFEST.json)", "opset", "inputs", "outputs")
EQUIVALENCE = RESULT_COLUMNS.index("equivalence")
RESULT = RESULT_COLUMNS.index("result")
PASS, BLOCKED, FAIL = "PASS", "BLOCKED", "FAIL"

log = logging.getLogger("models.coverage")


@dataclass(frozen=True)
class Row:
    """One line of a table: its section and its cells (strings, as written)."""

    section: str
    cells: tuple[str, ...]

    @property
    def key(self) -> tuple[str, ...]:
        """What identifies the row: section plus model, exporter, ratio (or the file name)."""
        return (self.section, *self.cells[: 1 if self.section == "files" else 3])

    @property
    def failed(self) -> bool:
        return self.section != "files" and self.cells[RESULT] == FAIL


# ---------------------------------------------------------------- the zoo


def zoo_files(zoo: Path = ZOO) -> list[Path]:
    """Every ``.onnx`` file under ``zoo``, recursively, except SPA's own ``*.pruned.onnx`` outputs."""
    return sorted(p for p in zoo.rglob("*.onnx") if not p.name.endswith(".pruned.onnx"))


def manifest_entry(path: Path) -> dict[str, Any]:
    """The file's entry in the ``MANIFEST.json`` beside it (under ``files`` or at the top), or {}."""
    manifest = path.parent / "MANIFEST.json"
    if not manifest.is_file():
        return {}
    data = json.loads(manifest.read_text())
    files = data.get("files", data) if isinstance(data, dict) else {}
    entry = files.get(path.name) if isinstance(files, dict) else None
    return entry if isinstance(entry, dict) else {}


def model_and_exporter(path: Path, zoo: Path = ZOO) -> tuple[str, str]:
    """``("hf/hf_bert", "dynamo")`` for ``zoo/hf/hf_bert.dynamo.onnx``: the exporter is the last
    dotted part of ``NAME.EXPORTER.onnx``, else the manifest's ``exporter``."""
    rel = path.resolve().relative_to(zoo.resolve())
    stem = rel.name[: -len(".onnx")]
    name, _, exporter = stem.rpartition(".")
    if not name:
        name, exporter = stem, str(manifest_entry(path).get("exporter", "?"))
    return str(rel.parent / name) if str(rel.parent) != "." else name, exporter


def exporter_description(entry: dict[str, Any]) -> str:
    """The exporter and its version as the manifest records them (the layouts differ per folder)."""
    exporter = str(entry.get("exporter", "?"))
    versions = entry.get("versions") if isinstance(entry.get("versions"), dict) else {}
    if entry.get("exporter_version"):
        text = f"{exporter} {entry['exporter_version']}"
    elif entry.get("torch_version") or versions.get("torch"):
        text = f"{exporter} (torch {entry.get('torch_version') or versions['torch']})"
    else:
        text = exporter
    if entry.get("framework_version"):
        text += f"; {entry['framework_version']}"
    elif versions.get("transformers"):
        text += f"; transformers {versions['transformers']}"
    return text


def _dims(value_info: onnx.ValueInfoProto) -> str:
    tt = value_info.type.tensor_type
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return f"{value_info.name} {onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name}[{', '.join(dims)}]"


def file_row(path: Path, model: onnx.ModelProto, zoo: Path = ZOO) -> Row:
    inits = {t.name for t in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    others = sorted({n.domain for n in model.graph.node} - {"", "ai.onnx"})  # domains in use, not declared
    return Row("files", (
        str(path.resolve().relative_to(zoo.resolve())),
        exporter_description(manifest_entry(path)) if manifest_entry(path) else "(no MANIFEST entry)",
        str(opset) + (f" (+{', '.join(others)})" if others else ""),
        "; ".join(_dims(i) for i in model.graph.input if i.name not in inits),
        "; ".join(_dims(o) for o in model.graph.output),
    ))


# ---------------------------------------------------------------- one model, one ratio


def input_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Shapes for the verification inputs: dynamic axis 0 takes :data:`BATCH`, other dynamic axes
    :data:`SEQ` for integer inputs and 1 for the rest."""
    from spa.model.runtime import input_specs

    shapes = {}
    for name, dims, elem_type in input_specs(model):
        integer = np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type), np.integer)
        shapes[name] = [d if isinstance(d, int) and d > 0 else (BATCH if k == 0 else (SEQ if integer else 1))
                        for k, d in enumerate(dims)]
    return shapes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _count(n: int) -> str:
    return f"{n:,}"


def _before_after(before: int, after: int) -> str:
    change = f" ({(after - before) / before * 100:+.1f} %)" if before > 0 else ""
    return f"{_count(before)} → {_count(after)}{change}".replace("-", "−")


def split_reasons(reason: str) -> list[str]:
    """The reasons a report joined with ``"; "``, without splitting inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(reason):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and reason.startswith("; ", i):
            parts.append(reason[start:i])
            start = i + 2
    parts.append(reason[start:])
    return [p.strip() for p in parts if p.strip()]


def short_reason(reason: str) -> str:
    """A block reason without its explanation: the part that names the op and the tensor
    (``model output 'logits' axis 1``, ``LayerNormalization 'ln' normalises over a pruned axis``)."""
    text = re.sub(r"\s*\([^()]*\)\s*$", "", reason)  # a trailing "(pruning it is approximate; ...)"
    text = text.split(": ", 1)[0]  # "...: pruning would change the model's interface"
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def blocked_summary(reasons: Sequence[str]) -> str:
    """One cell for the blocked groups: the first reason of each, shortened, counted, deduplicated."""
    if not reasons:
        return "—"
    counts = Counter(short_reason(split_reasons(r)[0]) for r in reasons)
    shown = [f"{text} (×{n})" if n > 1 else text for text, n in counts.items()]
    more = f"; … and {len(shown) - MAX_REASONS} more" if len(shown) > MAX_REASONS else ""
    return "; ".join(shown[:MAX_REASONS]) + more


def _checker(pruned: onnx.ModelProto) -> tuple[str, bool]:
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        return f"FAIL: {_first_line(exc)}", False
    return "PASS", True


def _runs(pruned: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> tuple[str, bool]:
    """Whether the pruned model runs in onnxruntime and gives finite outputs of the original's shapes."""
    from spa.model.runtime import make_session, run

    try:
        got = run(make_session(pruned), feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many unrelated types
        return f"FAIL: {_first_line(exc)}", False
    for name, ref in reference.items():
        out = got.get(name)
        if out is None or out.shape != ref.shape:
            return f"FAIL: output '{name}' is {None if out is None else out.shape}, not {ref.shape}", False
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            return f"FAIL: output '{name}' is not finite", False
    return "runs", True


def _equivalence(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: Any,
                 shapes: dict[str, list[int]]) -> tuple[str, bool]:
    from spa.check.verify import verify

    try:
        v = verify(original, pruned, plan, seed=SEED, batch=BATCH, shapes=shapes)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not hidden
        return f"FAIL: {_first_line(exc)}", False
    worst = max((o.rel for o in v.outputs), default=0.0)
    if v.mode == "drift":
        if not np.isfinite(worst):
            return "FAIL: drift is not finite", False
        return f"approx, drift {worst:.4g}", True
    if v.passed:
        return "PASS (exact)", True
    return f"FAIL (max rel {worst:.3g})", False


def result_row(original: onnx.ModelProto, path: Path, ratio: float, section: str,
               reference: dict[str, np.ndarray], zoo: Path = ZOO) -> Row:
    """Prune ``original`` (the model at ``path``) at ``ratio`` and check it: one row."""
    import spa
    from spa.model.runtime import random_inputs
    from spa.records import Scoring, Selection

    model, exporter = model_and_exporter(path, zoo)
    head = (model, exporter, f"{ratio:g}")
    try:
        selection = Selection(round_to=1, prune_norm_axes=section == NORM_MODE)
        pruned, plan, report = spa.prune(original, ratio=ratio, criterion=CRITERION, selection=selection,
                                         scoring=Scoring(seed=SEED))
    except Exception as exc:  # noqa: BLE001 - a crash is a FAIL row with its cause, never hidden
        why = f"spa.prune raised {_first_line(exc)}"
        return Row(section, (*head, "—", "—", "—", "—", "—", "—", FAIL, why))
    shapes = input_shapes(original)
    feeds = random_inputs(original, seed=SEED, shapes=shapes, batch=BATCH)  # what verify feeds
    checker, ok_checker = _checker(pruned)
    runs, ok_runs = _runs(pruned, feeds, reference)
    equivalence, ok_eq = _equivalence(original, pruned, plan, shapes)
    if not (ok_checker and ok_runs and ok_eq):
        result = FAIL
    else:
        result = PASS if report.groups_pruned else BLOCKED
    groups = (f"{report.groups_total} / {report.groups_pruned} / {len(report.blocked)} / "
              f"{report.groups_unchanged}")
    return Row(section, (*head, groups, _before_after(report.before.params, report.after.params),
                         _before_after(report.before.macs, report.after.macs), checker, runs, equivalence,
                         result, blocked_summary([b.reason for b in report.blocked])))


def _replays(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: Any) -> tuple[str, bool]:
    """Whether replaying ``plan`` on ``original`` gives ``pruned``'s weights, tensor for tensor."""
    from onnx import numpy_helper

    import spa
    from spa.records import Scoring

    try:
        again = spa.prune(original, from_plan=plan, scoring=Scoring(seed=SEED))[0]
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return f"replay FAIL: {_first_line(exc)}", False
    a = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in again.graph.initializer}
    if a.keys() != b.keys() or not all(np.array_equal(a[k], b[k]) for k in a):
        return "replay FAIL: other weights", False
    return "replays", True


def cli_default_row(original: onnx.ModelProto, path: Path, reference: dict[str, np.ndarray],
                    zoo: Path = ZOO) -> Row:
    """``spa prune MODEL --ratio 0.4`` with every other setting at its default: one row."""
    import spa
    from spa.model.runtime import make_session, random_inputs, run
    from spa.records import Scoring, Selection

    model, exporter = model_and_exporter(path, zoo)
    head = (model, exporter, f"{CLI_RATIO:g}")
    try:
        pruned, plan, report = spa.prune(original, ratio=CLI_RATIO, criterion=CLI_CRITERION,
                                         selection=Selection(round_to=CLI_ROUND_TO), scoring=Scoring(seed=SEED))
    except Exception as exc:  # noqa: BLE001 - a crash is a FAIL row with its cause, never hidden
        return Row(CLI_MODE, (*head, "—", "—", "—", "—", "—", "—", FAIL, f"spa.prune raised {_first_line(exc)}"))
    shapes = input_shapes(original)
    checker, ok_checker = _checker(pruned)
    runs, ok_runs = _runs(pruned, random_inputs(original, seed=SEED, shapes=shapes, batch=BATCH), reference)
    if ok_runs:  # batch 1 as well: a dynamic batch must stay dynamic
        one = {k: [1, *v[1:]] if v else v for k, v in shapes.items()}
        feeds = random_inputs(original, seed=SEED, shapes=one)
        runs, ok_runs = _runs(pruned, feeds, run(make_session(original), feeds))
    drift, ok_drift = _equivalence(original, pruned, plan, shapes)
    replay, ok_replay = _replays(original, pruned, plan)
    ok = ok_checker and ok_runs and ok_drift and ok_replay
    result = (PASS if report.groups_pruned else BLOCKED) if ok else FAIL
    groups = (f"{report.groups_total} / {report.groups_pruned} / {len(report.blocked)} / "
              f"{report.groups_unchanged}")
    return Row(CLI_MODE, (*head, groups, _before_after(report.before.params, report.after.params),
                          _before_after(report.before.macs, report.after.macs), checker, runs,
                          f"{drift}, {replay}", result, blocked_summary([b.reason for b in report.blocked])))


def has_norm_blocked_groups(model: onnx.ModelProto) -> bool:
    """Whether ``prune_norm_axes`` would unblock a group: one only a normalisation keeps whole."""
    import spa

    return any(g.inexact and g.prunable for g in spa.analyze(model, prune_norm_axes=True).groups)


def rows_for_file(path: Path, zoo: Path = ZOO) -> list[Row]:
    """Every row of ``path``: its file row, its default rows and, where they apply, its
    ``prune_norm_axes`` rows."""
    import spa
    from spa.model.runtime import make_session, random_inputs, run

    t0 = time.perf_counter()
    try:
        original = spa.load_model(path)
    except Exception as exc:  # noqa: BLE001 - a file SPA cannot load is a FAIL row
        model, exporter = model_and_exporter(path, zoo)
        return [Row(DEFAULT_MODE, (model, exporter, f"{r:g}", *["—"] * 6, FAIL, f"load failed: {_first_line(exc)}"))
                for r in RATIOS]
    rows = [file_row(path, original, zoo)]
    shapes = input_shapes(original)
    reference = run(make_session(original), random_inputs(original, seed=SEED, shapes=shapes, batch=BATCH))
    rows += [result_row(original, path, r, DEFAULT_MODE, reference, zoo) for r in RATIOS]
    try:
        norm = has_norm_blocked_groups(original)
    except Exception:  # noqa: BLE001 - the default rows already show the failure
        norm = False
    if norm:
        rows += [result_row(original, path, r, NORM_MODE, reference, zoo) for r in RATIOS]
    if path.resolve().relative_to(zoo.resolve()).parts[0] == DEFAULTS_DIR:
        rows.append(cli_default_row(original, path, reference, zoo))
    log.info("%s: %d rows in %.2f s", rows[0].cells[0], len(rows), time.perf_counter() - t0)
    return rows


def collect(files: Iterable[Path], zoo: Path = ZOO) -> list[Row]:
    return [row for path in files for row in rows_for_file(path, zoo)]


# ---------------------------------------------------------------- the document


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _table(columns: Sequence[str], rows: Iterable[Row]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_escape(c) for c in row.cells) + " |" for row in rows]
    return lines


def _versions() -> str:
    import onnxruntime

    return f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"


HEADER = """\
# Coverage of the model zoo

Generated by `{command}` on {date} ({versions}); do not edit by hand.
`tests/test_coverage.py` recomputes every row and fails when one differs from this file, when a zoo
file has no rows here, or when a row says FAIL. After a change that moves the figures, regenerate
it with `{command}` (`{command} --check` compares without writing).

Every `.onnx` file under `models/zoo/` (recursively) is pruned with `spa.prune(model, ratio,
criterion="{criterion}", selection=Selection(round_to=1))` at ratios {ratios}, with whole attention heads (the default).
Each pruned model goes through the full `onnx.checker`, an onnxruntime run and SPA's masked-equivalence
check (`spa.check.verify.verify`, the check of `spa verify`), on seeded random inputs at batch {batch}; integer
inputs (token ids, attention masks) get sequence length {seq} on their dynamic axes.

- **groups found / pruned / blocked / unchanged**: coupled channel groups in the model; groups that
  lost units; groups SPA refuses to prune (with the reason); prunable groups that keep every unit at
  this ratio (`floor(ratio · n) = 0`, e.g. 2 KV heads at 0.3).
- **params** (elements of float weights) and **MACs** (multiply-accumulates of Conv, ConvTranspose,
  Gemm, MatMul and the fused `com.microsoft` attention ops, see `spa/model/metrics.py`; at batch 1,
  sequence 1), before → after, with the change.
- **checker**: `onnx.checker.check_model(pruned, full_check=True)`. **onnxruntime**: the pruned
  model runs and its outputs are finite and shaped like the original's.
- **equivalence**: `PASS (exact)` when the pruned model computes what the original computes with
  the removed channels zeroed (`|pruned − masked| ≤ 1e-5 + 1e-4·max|masked|`). `approx, drift D`
  where a normalisation spans a pruned axis, so equivalence cannot hold by nature: `D` is the worst
  output's `max|pruned − original| / max|original|` against the unmodified original.
- **result**: `PASS` when channels were removed and every check passed; `BLOCKED` when every check
  passed but no group lost a unit; `FAIL` when anything failed or crashed.
- **blocked because**: the first reason of each blocked group, shortened to the op and tensor it
  names, with (×n) for reasons shared by n groups; `spa groups MODEL` prints them in full.

{summary}
"""

NORM_INTRO = """\
Files whose hidden (residual) groups are blocked only because a normalisation (LayerNorm, RMSNorm,
decomposed or fused) averages over them, pruned again with `Selection(prune_norm_axes=True)`
(`spa prune --prune-norm-axes`). The rows are approximate by nature: the drift is reported.
"""

CLI_INTRO = """\
What a user gets from `spa prune MODEL --ratio {ratio:g}` with no other option, on the files of
`models/zoo/{folder}/`: the zoo's torch models (the CNNs, `patterns/`, the `torch.nn`
`transformers/` and the Hugging Face `hf/`) exported with each exporter's *default* settings
(TorchScript with constant folding, dynamo with its optimizer: BatchNorm folded into the
convolutions, equal biases shared), the way most models reach SPA (`python -m models.build_zoo
--defaults`, `python -m models.build_patterns --defaults`, `python -m models.build_transformers
--defaults`, and `python -m models.transformers_zoo --defaults` in the venv of
`models/requirements-hf.txt`).
The criterion is `{criterion}` (compensated, so the result is approximate by design:
**drift** is `max|pruned − original| / max|original|` of the worst output), `--round-to {round_to}`.
The pruned model runs in onnxruntime at batch 1 and {batch}, and **plan replay** prunes the original
again from the written plan and must give the same weights, tensor for tensor.
"""

FILES_INTRO = "The files, with the exporter and versions their `MANIFEST.json` records.\n"


def summary(rows: Sequence[Row]) -> str:
    results = [r for r in rows if r.section != "files"]
    counts = Counter(r.cells[RESULT] for r in results)
    files = sum(r.section == "files" for r in rows)
    approx = sum(r.cells[EQUIVALENCE].startswith("approx") for r in results)
    return (f"{files} files, {len(results)} rows: {counts[PASS]} PASS, {counts[BLOCKED]} BLOCKED, "
            f"{counts[FAIL]} FAIL; {approx} rows approximate.")


def render(rows: Sequence[Row], date: str | None = None) -> str:
    date = date or datetime.date.today().isoformat()
    text = HEADER.format(command=COMMAND, date=date, versions=_versions(), criterion=CRITERION,
                         ratios=" and ".join(f"{r:g}" for r in RATIOS), batch=BATCH, seq=SEQ, summary=summary(rows))
    cli_intro = CLI_INTRO.format(ratio=CLI_RATIO, folder=DEFAULTS_DIR, criterion=CLI_CRITERION,
                                 round_to=CLI_ROUND_TO, batch=BATCH)
    for section, intro, columns in ((DEFAULT_MODE, "", RESULT_COLUMNS), (NORM_MODE, NORM_INTRO, RESULT_COLUMNS),
                                    (CLI_MODE, cli_intro, CLI_COLUMNS), ("files", FILES_INTRO, FILE_COLUMNS)):
        text += f"\n## {SECTIONS[section]}\n\n" + (intro + "\n" if intro else "")
        text += "\n".join(_table(columns, [r for r in rows if r.section == section])) + "\n"
    return text


def parse(text: str) -> list[Row]:
    """The table rows of a document :func:`render` wrote."""
    by_title = {title: name for name, title in SECTIONS.items()}
    rows, section = [], None
    for line in text.splitlines():
        if line.startswith("## "):
            section = by_title.get(line[3:].strip())
        elif section and line.startswith("|") and not line.startswith("|---"):
            cells = tuple(c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1])
            if cells not in (RESULT_COLUMNS, CLI_COLUMNS, FILE_COLUMNS):
                rows.append(Row(section, cells))
    return rows


def _drift(cell: str) -> tuple[float, str] | None:
    """The drift figure of an equivalence cell, and what follows it (``, replays``)."""
    m = re.fullmatch(r"approx, drift ([^,\s]+)(.*)", cell)
    return (float(m.group(1)), m.group(2)) if m else None


def same_cells(a: Row, b: Row) -> bool:
    """Equal cells, except that two drift figures need only agree within the tolerance."""
    if a.section != b.section or len(a.cells) != len(b.cells):
        return False
    for k, (x, y) in enumerate(zip(a.cells, b.cells)):
        dx, dy = (_drift(x), _drift(y)) if a.section != "files" and k == EQUIVALENCE else (None, None)
        if dx is not None and dy is not None:
            (fx, rest_x), (fy, rest_y) = dx, dy
            if rest_x != rest_y or abs(fx - fy) > DRIFT_ATOL + DRIFT_RTOL * max(abs(fx), abs(fy)):
                return False
        elif x != y:
            return False
    return True


def compare_rows(committed: Sequence[Row], fresh: Sequence[Row]) -> list[str]:
    """Differences between the committed rows and freshly computed ones (empty when they agree)."""
    old = {r.key: r for r in committed}
    new = {r.key: r for r in fresh}
    problems = [f"missing from the table: {' | '.join(k[1:])} ({k[0]})" for k in new if k not in old]
    problems += [f"in the table but not computed: {' | '.join(k[1:])} ({k[0]})" for k in old if k not in new]
    for key in (k for k in new if k in old):
        if not same_cells(old[key], new[key]):
            problems.append(f"differs: {' | '.join(key[1:])} ({key[0]})\n  table:    {' | '.join(old[key].cells)}"
                            f"\n  computed: {' | '.join(new[key].cells)}")
    return problems


def file_of(row: Row, zoo: Path = ZOO) -> Path:
    """The zoo file a row describes (for a file that is gone: where ``NAME.EXPORTER.onnx`` was)."""
    if row.section == "files":
        return zoo / row.cells[0]
    model, exporter = row.cells[:2]
    return _files_by_name(zoo).get((model, exporter), zoo / f"{model}.{exporter}.onnx")


@cache
def _files_by_name(zoo: Path) -> dict[tuple[str, str], Path]:
    return {model_and_exporter(p, zoo): p for p in zoo_files(zoo)}


def merge(committed: Sequence[Row], fresh: Sequence[Row], recomputed: set[Path], zoo: Path = ZOO) -> list[Row]:
    """The rows of every zoo file in zoo order: ``fresh`` for the ``recomputed`` files, the
    ``committed`` ones for the others (rows of files that are gone are dropped)."""
    by_file: dict[Path, list[Row]] = {}
    for row in committed:
        path = file_of(row, zoo).resolve()
        if path not in recomputed:
            by_file.setdefault(path, []).append(row)
    for row in fresh:
        by_file.setdefault(file_of(row, zoo).resolve(), []).append(row)
    return [row for path in zoo_files(zoo) for row in by_file.get(path.resolve(), [])]


# ---------------------------------------------------------------- command line


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the document instead of writing it")
    ap.add_argument("--doc", type=Path, default=DOC, help=f"the document (default {DOC.relative_to(ROOT)})")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    ap.add_argument("files", nargs="*", type=Path,
                    help="zoo files (or folders) to recompute; the other files' rows are kept from the document")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    logging.getLogger("spa").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    if args.files:
        chosen = {f.resolve() for f in zoo_files() if any(f.resolve().is_relative_to(a.resolve()) for a in args.files)}
        if not chosen:
            print(f"no zoo file under {', '.join(map(str, args.files))}", file=sys.stderr)
            return 1
        fresh = collect(sorted(chosen))
        if args.check:
            committed = [r for r in parse(args.doc.read_text(encoding="utf-8")) if file_of(r).resolve() in chosen]
            rows = fresh
        else:
            rows = merge(parse(args.doc.read_text(encoding="utf-8")) if args.doc.is_file() else [], fresh, chosen)
    else:
        rows = collect(zoo_files())
    seconds = time.perf_counter() - t0
    failed = [r for r in rows if r.failed]
    for r in failed:
        log.error("FAIL: %s", " | ".join(r.cells))
    if args.check:
        if not args.doc.is_file():
            print(f"{args.doc} does not exist: run {COMMAND}", file=sys.stderr)
            return 1
        problems = compare_rows(committed if args.files else parse(args.doc.read_text(encoding="utf-8")), rows)
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{len(rows)} rows computed in {seconds:.1f} s; {len(problems)} differ from {args.doc}; "
              f"{len(failed)} FAIL")
        return 1 if problems or failed else 0
    _write(args.doc, render(rows))
    print(f"wrote {args.doc}: {summary(rows)} ({seconds:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
