"""Shared machinery of the coverage benchmarks on architectures none of us wrote.

``benchmarks.torchvision_coverage`` and ``benchmarks.timm_coverage`` each name their models and
how to build them; this module exports every model with both torch exporters into a cache folder,
prunes each export with the command line exactly as a user would::

    spa prune MODEL.onnx --ratio 0.4 --criterion l1 --round-to 1 --verify --plan P --report R -o OUT

then replays the saved plan with ``spa verify MODEL.onnx OUT --plan P`` (masked equivalence from
the plan file), and prints one Markdown row per model and exporter. With ``--doc`` the table and
its summary replace the part of the document between :data:`BEGIN` and :data:`END` (the prose
around them is kept), or a new document is written.

A model whose export raises is recorded as ``export failed`` with the error's first line: that is
the exporter's limit, not SPA's. Everything after the export that goes wrong is a ``FAIL``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("coverage")

EXPORTERS = ("ts", "dynamo")
RATIO = 0.4
CRITERION = "l1"
#: Seconds one ``spa prune`` (or ``spa verify``) run may take before it counts as a FAIL.
TIMEOUT_S = 1800
BEGIN = "<!-- coverage table: generated, do not edit by hand -->"
END = "<!-- end of coverage table -->"
PASS, BLOCKED, FAIL, EXPORT_FAILED = "PASS", "BLOCKED", "FAIL", "export failed"
COLUMNS = ("model", "exporter", "input", "result", "groups found / pruned / blocked", "MACs before → after",
           "verify (prune / plan replay)", "export s", "prune s", "blocked because")
MAX_REASONS = 3


@dataclass(frozen=True)
class Case:
    """One model to cover: its name, how to build it (eval mode, random weights), its example
    inputs' shapes and its output names."""

    name: str
    build: Callable[[], Any]
    shapes: tuple[tuple[int, ...], ...] = ((1, 3, 224, 224),)
    outputs: tuple[str, ...] = ("logits",)

    @property
    def input_text(self) -> str:
        return ", ".join("x".join(str(d) for d in s) for s in self.shapes)


@dataclass
class Outcome:
    """What happened to one export of one model."""

    model: str
    exporter: str
    input: str
    result: str
    groups: str = "—"
    macs: str = "—"
    verify: str = "—"
    export_s: float | None = None
    prune_s: float | None = None
    why: str = ""
    reasons: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        secs = [f"{s:.1f}" if s is not None else "—" for s in (self.export_s, self.prune_s)]
        return [self.model, self.exporter, self.input, self.result, self.groups, self.macs, self.verify, *secs,
                self.why or blocked_summary(self.reasons)]


# ---------------------------------------------------------------- export


def define_torchvision_ops() -> None:
    """Define ``torchvision::nms``/``qnms`` so that torchvision (and timm, which imports it)
    imports on a CPU-only torch whose torchvision wheel lacks its compiled operators."""
    import torch

    if getattr(define_torchvision_ops, "lib", None) is not None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018 - already defined by a working torchvision build
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    define_torchvision_ops.lib = lib  # type: ignore[attr-defined] - keeps the ops defined


def export(case: Case, exporter: str, out: Path) -> None:
    """Export ``case`` with ``exporter`` (``ts``: TorchScript, opset 17, no constant folding,
    dynamic batch; ``dynamo``: unoptimised, weights inside the file) to ``out``, atomically."""
    import torch

    torch.manual_seed(0)
    module = case.build().eval()
    xs = tuple(torch.randn(*s) for s in case.shapes)
    inputs = ["input"] if len(xs) == 1 else [f"input{i}" for i in range(len(xs))]
    tmp = out.with_name(out.name + ".part")
    # Not under torch.no_grad(): there nn.MultiheadAttention takes its fused inference path
    # (aten::_native_multi_head_attention), which the TorchScript exporter cannot export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "ts":
            torch.onnx.export(module, xs, str(tmp), dynamo=False, opset_version=17, do_constant_folding=False,
                              input_names=inputs, output_names=list(case.outputs),
                              dynamic_axes={n: {0: "batch"} for n in (*inputs, *case.outputs)})
        elif exporter == "dynamo":
            torch.onnx.export(module, xs, str(tmp), dynamo=True, optimize=False, external_data=False, verbose=False,
                              input_names=inputs, output_names=list(case.outputs))
        else:
            raise ValueError(f"exporter must be one of {EXPORTERS}, not {exporter!r}")
    os.replace(tmp, out)


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""


def cached_export(case: Case, exporter: str, cache: Path) -> tuple[Path | None, float | None, str]:
    """The exported file (exported now unless cached), the export's seconds (recorded beside it),
    and the error's first line when the export failed (remembered in ``NAME.EXPORTER.failed``)."""
    path = cache / f"{case.name}.{exporter}.onnx"
    failed, seconds = path.with_suffix(".failed"), path.with_suffix(".seconds")
    recorded = float(seconds.read_text()) if seconds.exists() else None
    if path.exists():
        return path, recorded, ""
    if failed.exists():
        return None, recorded, failed.read_text().strip()
    log.info("exporting %s (%s)", case.name, exporter)
    t0 = time.perf_counter()
    why = ""
    try:
        export(case, exporter, path)
    except Exception as exc:  # noqa: BLE001 - any exporter error is the exporter's, recorded as such
        why = f"{type(exc).__name__}: {first_line(str(exc))}"
        failed.write_text(why + "\n")
    seconds.write_text(f"{time.perf_counter() - t0:.2f}\n")
    return (None if why else path), float(seconds.read_text()), why


# ---------------------------------------------------------------- prune with the CLI


def spa_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "spa", *args]


def _run(cmd: list[str], stdout: bool = False) -> tuple[int, str]:
    """The exit code and stderr (or stdout) of ``cmd``."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT_S} s"
    return proc.returncode, proc.stdout if stdout else proc.stderr


def _error_line(stderr: str) -> str:
    """The line that says what went wrong: ``spa: error: ...`` or a traceback's last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("spa: error:"):
            return ln[len("spa: error:"):].strip()[:300]
    return lines[-1][:300] if lines else "(no message)"


def _giga(macs: int) -> str:
    return f"{macs / 1e9:.3f}G" if macs < 1e8 else f"{macs / 1e9:.2f}G"


def prune(path: Path, ratio: float, workdir: Path) -> Outcome:
    """Prune ``path`` with ``spa prune ... --verify --plan``, then replay the plan with ``spa verify``."""
    model, _, exporter = path.name[: -len(".onnx")].rpartition(".")
    out, plan, report = (workdir / f"{path.stem}.{s}" for s in ("pruned.onnx", "plan.json", "report.json"))
    for p in (out, plan, report):
        p.unlink(missing_ok=True)
    o = Outcome(model, exporter, "", FAIL)
    t0 = time.perf_counter()
    rc, stderr = _run(spa_command("prune", str(path), "--ratio", f"{ratio:g}", "--criterion", CRITERION,
                                  "--round-to", "1", "--verify", "--plan", str(plan), "--report", str(report),
                                  "-o", str(out)))
    o.prune_s = time.perf_counter() - t0
    if report.exists():
        r = json.loads(report.read_text())
        o.groups = f"{r['groups_total']} / {r['groups_pruned']} / {len(r['blocked'])}"
        o.macs = f"{_giga(r['before']['macs'])} → {_giga(r['after']['macs'])}"
        o.reasons = [b["reason"] for b in r["blocked"]]
        ver = r.get("verification") or {}
        o.verify = "PASS" if ver.get("passed") else ("mismatch" if ver else "—")
    if rc != 0:
        o.why = f"spa prune exit {rc}: {_error_line(stderr)}"
        return o
    if not out.exists():  # "nothing to prune": every group blocked
        o.result = BLOCKED
        return o
    rc, stderr = _run(spa_command("verify", str(path), str(out), "--plan", str(plan), "-q"))
    o.verify += " / " + ("PASS" if rc == 0 else "mismatch" if rc == 3 else f"exit {rc}")
    if rc != 0:
        o.why = f"spa verify exit {rc}: {_error_line(stderr)}"
        return o
    o.result = PASS if r["groups_pruned"] else BLOCKED
    return o


# ---------------------------------------------------------------- the table


def blocked_summary(reasons: Sequence[str]) -> str:
    """The first reason of each blocked group, shortened to the op and tensor it names (as in
    docs/coverage.md), counted; groups blocked only by a model output are counted at the end."""
    from models.coverage import short_reason, split_reasons

    outputs = [r for r in reasons if r.startswith("model output")]
    counts = Counter(short_reason(split_reasons(r)[0]) for r in reasons if not r.startswith("model output"))
    shown = [f"{text} (×{n})" if n > 1 else text for text, n in counts.most_common()]
    more = f"; … and {len(shown) - MAX_REASONS} more" if len(shown) > MAX_REASONS else ""
    text = "; ".join(shown[:MAX_REASONS]) + more
    if outputs:
        text += ("; " if text else "") + ("the model output" if len(outputs) == 1 else f"model outputs (×{len(outputs)})")
    return text or "—"


def row(o: Outcome) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in o.cells()) + " |"


def header() -> list[str]:
    return ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]


def summary(outcomes: Sequence[Outcome]) -> str:
    lines = []
    for exporter in EXPORTERS:
        mine = [o for o in outcomes if o.exporter == exporter]
        if mine:
            c = Counter(o.result for o in mine)
            lines.append(f"- **{exporter}**: {len(mine)} models: {c[PASS]} PASS, {c[BLOCKED]} BLOCKED, "
                         f"{c[FAIL]} FAIL, {c[EXPORT_FAILED]} export failed.")
    return "\n".join(lines)


def versions(extra: Sequence[str] = ()) -> str:
    import onnx
    import onnxruntime
    import torch

    import spa

    names = [f"torch {torch.__version__}", *extra, f"onnx {onnx.__version__}",
             f"onnxruntime {onnxruntime.__version__}", f"spa {getattr(spa, '__version__', '?')}"]
    return ", ".join(names)


def write_doc(doc: Path, title: str, command: str, vers: str, outcomes: Sequence[Outcome]) -> None:
    """Put the generated block (command, versions, date, summary, table) between BEGIN and END in
    ``doc``, keeping the rest; a missing document gets a title and the block."""
    block = "\n".join([
        BEGIN,
        f"Generated on {datetime.date.today().isoformat()} with `{command}` ({vers}); each export pruned with "
        f"`spa prune MODEL --ratio {RATIO:g} --criterion {CRITERION} --round-to 1 --verify --plan P` and the "
        "plan replayed with `spa verify MODEL PRUNED --plan P`.",
        "",
        summary(outcomes),
        "",
        *header(),
        *(row(o) for o in outcomes),
        END,
    ])
    text = doc.read_text() if doc.exists() else f"# {title}\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    start, end = text.index(BEGIN), text.index(END) + len(END)
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(text[:start] + block + text[end:])
    os.replace(tmp, doc)


# ---------------------------------------------------------------- the driver


def main(cases: Sequence[Case], default: Sequence[str], title: str, module: str, extra_versions: Sequence[str],
         argv: Sequence[str] | None = None, description: str = "") -> list[Outcome]:
    """Parse the command line, export and prune the chosen cases, print the table, write ``--doc``
    (which records the command as run: ``python -m MODULE ARGS``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m", module, *argv])
    known = {c.name: c for c in cases}
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--models", default=",".join(default),
                    help=f"comma-separated subset, or 'all' (known: {', '.join(known)})")
    ap.add_argument("--exporters", default=",".join(EXPORTERS))
    ap.add_argument("--ratio", type=float, default=RATIO)
    ap.add_argument("--cache", type=Path, default=None, help="keep exported files here (not committed)")
    ap.add_argument("--doc", type=Path, default=None, help="write the table into this Markdown file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = list(known) if args.models == "all" else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    cache = args.cache or Path(tempfile.mkdtemp(prefix="spa-coverage-"))
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="spa-coverage-out-"))
    outcomes = []
    print("\n".join(header()), flush=True)
    for name in names:
        case = known[name]
        for exporter in args.exporters.split(","):
            path, export_s, why = cached_export(case, exporter, cache)
            if path is None:
                o = Outcome(name, exporter, case.input_text, EXPORT_FAILED, export_s=export_s, why=why)
            else:
                o = prune(path, args.ratio, work)
                o.input, o.export_s = case.input_text, export_s
                for p in work.iterdir():
                    p.unlink()
            outcomes.append(o)
            print(row(o), flush=True)
    work.rmdir()
    print("\n" + summary(outcomes))
    if args.doc:
        write_doc(args.doc, title, command, versions(extra_versions), outcomes)
    return outcomes
