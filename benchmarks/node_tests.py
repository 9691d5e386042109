"""``spa prune`` over ONNX's own backend node tests: does every model end cleanly?

ONNX ships one tiny model per operator case (``onnx.backend.test.case.node``: 1,800+ of them).
Almost none has anything to prune; what matters is how each run ends. This benchmark builds the
models (cached under ``--cache``), runs ``spa prune MODEL -o OUT`` on each in-process through
:func:`spa.cli.app.main`, exactly as the command line does, and counts outcomes::

    python -m benchmarks.node_tests [--limit N] [--json out.json]

Outcomes: ``ok`` (exit 0, pruned), ``nothing`` (exit 0, "nothing to prune"), ``user-error``
(exit 1 with one ``spa: error:`` line), ``bug`` (a ``spa: error:`` line saying "bug in SPA"),
``traceback`` (an exception escaped :func:`spa.cli.app.main`), ``other`` (any other exit code).

Measured with onnx 1.23.2 and onnxruntime 1.32 (1,884 models): before nothing-to-prune was
decided up front, 542 ended in "This is a bug in SPA" (the unchanged model then failed
onnxruntime on SPA's random inputs), 1,048 in "nothing to prune" and 294 in user errors; after,
0, 1,816 and 68 (no default-domain opset, string inputs, ...), and no tracebacks either time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "spa-node-tests"


@dataclass
class Outcome:
    """How one ``spa prune`` run ended."""

    name: str
    kind: str
    code: int | None
    message: str
    seconds: float


def build_models(cache: Path) -> list[Path]:
    """Every backend node-test model as ``cache/<name>.onnx`` (built once; sorted by name)."""
    import onnx

    cache.mkdir(parents=True, exist_ok=True)
    done = cache / ".complete"
    if not done.exists():
        from onnx.backend.test.case.node import collect_testcases

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = collect_testcases(None)
        for case in cases:
            if case.model is not None:
                onnx.save(case.model, str(cache / f"{case.name}.onnx"))
        done.write_text(str(len(cases)))
    return sorted(cache.glob("*.onnx"))


def run_one(model: Path, out_dir: Path, extra: list[str] | None = None) -> Outcome:
    """``spa prune MODEL -o OUT -q`` in this process; classify how it ended."""
    from spa.cli.app import main

    out = out_dir / f"{model.stem}.pruned.onnx"
    stdout, stderr = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    code: int | None
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["prune", str(model), "-o", str(out), *(extra or [])])
    except SystemExit as exc:
        code = int(exc.code) if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - a traceback is exactly what is counted
        if isinstance(exc, KeyboardInterrupt):
            raise
        code = None
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Outcome(model.stem, "traceback", None, last[:300], time.perf_counter() - t0)
    finally:
        logging.getLogger().handlers.clear()
        out.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    err = stderr.getvalue()
    errors = [ln for ln in err.splitlines() if ln.startswith("spa: ")]
    message = errors[0] if errors else ""
    if "Traceback" in err:
        kind = "traceback"
    elif "This is a bug in SPA" in err:
        kind = "bug"
    elif code == 0:
        kind = "nothing" if "nothing to prune" in stdout.getvalue() else "ok"
    elif code == 1 and len(errors) == 1:
        kind = "user-error"
    else:
        kind = "other"
    return Outcome(model.stem, kind, code, message[:300], seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for the built models")
    p.add_argument("--limit", type=int, default=0, help="only the first N models (by name)")
    p.add_argument("--json", type=Path, help="also write every outcome here")
    p.add_argument("--show", type=int, default=5, help="example messages to print per outcome")
    args = p.parse_args(argv)
    models = build_models(args.cache)
    if args.limit:
        models = models[: args.limit]
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, m in enumerate(models):
            outcomes.append(run_one(m, Path(tmp)))
            if (i + 1) % 100 == 0:
                print(f"{i + 1}/{len(models)} {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    counts = Counter(o.kind for o in outcomes)
    print(f"{len(outcomes)} models, {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for kind in ("traceback", "bug", "other", "user-error"):
        shown = [o for o in outcomes if o.kind == kind][: args.show]
        for o in shown:
            print(f"  {kind:10} {o.name}: {o.message}")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
