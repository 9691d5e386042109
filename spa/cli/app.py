"""The ``spa`` command line: ``prune``, ``groups``, ``verify``, ``bench`` and ``info``.

Exit codes: 0 ok (also "nothing to prune"), 1 user error, 2 usage, 3 verification failed,
4 a gate failed (``--max-drift``, ``--min-speedup``, ...), 5 an internal error (a bug in SPA; ``-vv``
shows its traceback). Reports go to stdout, logs to stderr;
user errors print one line and no traceback. ``spa prune`` also reads its settings from
``spa.toml`` or ``[tool.spa]`` in ``pyproject.toml`` (see :mod:`spa.cli.config`). Each subcommand
lives in its own module under :mod:`spa.cli.commands`.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from spa.cli import config
from spa.cli.commands import COMMANDS
from spa.cli.commands.common import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, document_on_stdout, inputs_scope
from spa.cli.config import fill_lists
from spa.errors import SpaError
from spa.model.runtime import resolve_device
from spa.version import __version__

log = logging.getLogger("spa")

#: Subcommands whose defaults come from spa.toml / [tool.spa].
CONFIGURED = ("prune",)


class _Parser(argparse.ArgumentParser):
    #: Subcommand parsers by name (set on the top-level parser by :func:`build_parser`).
    subcommands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: usage error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spa", description=__doc__.splitlines()[0] if __doc__ else None)

    parser.add_argument("--version", action="version", version=f"spa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parsers = {m.__name__.rsplit(".", 1)[1]: m.add_parser(sub) for m in COMMANDS}
    parser.subcommands = {name: p for name, p in parsers.items() if name in CONFIGURED}
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING - 10 * args.verbose + 10 * args.quiet
    logging.basicConfig(level=max(logging.DEBUG, min(level, logging.CRITICAL)), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s", force=True)


def _load_config(parser: argparse.ArgumentParser, argv: list[str]) -> Any:
    """The settings file for ``spa prune`` (``--config``, else looked up), applied as the
    prune parser's defaults; None for other commands, with ``--no-config`` or without a file."""

    command = next((a for a in argv if not a.startswith("-")), None)
    subs = getattr(parser, "subcommands", {})
    if command not in subs or "-h" in argv or "--help" in argv:
        return None
    path, no_config = config.prescan(argv)
    if no_config:
        return None
    found = path if path is not None else config.find_config()
    if found is None:
        return None
    cfg = config.load(found, subs[command])
    config.apply(cfg, subs[command])
    return cfg


def _shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fail(exc: SpaError, quiet: int, start: float, cmd: str) -> int:
    message = "; ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()) or type(exc).__name__
    print(f"spa: {exc.prefix}: {message}", file=sys.stderr)
    if quiet < 2:
        print(f"FAILED | {time.perf_counter() - start:.2f} s | {cmd}", file=sys.stderr)
    return exc.exit_code


def _internal(exc: Exception, quiet: int, start: float, cmd: str) -> int:
    """An exception that is not a :class:`SpaError`: a bug in SPA. One line (exit 5); the
    traceback is logged at debug level (``-vv``)."""
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
    print(f"spa: error: internal error ({what}); nothing was written. This is a bug in SPA: please "
          "report it with the output of -vv, which shows the traceback", file=sys.stderr)
    if quiet < 2:
        print(f"FAILED | {time.perf_counter() - start:.2f} s | {cmd}", file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    start = time.perf_counter()
    cmd = "spa " + shlex.join(argv)
    try:
        cfg = _load_config(parser, argv)
    except SpaError as exc:
        return _fail(exc, 0, start, cmd)
    args = parser.parse_args(argv)
    if cfg is not None:
        fill_lists(cfg, args)
        args.config_file = _shown_path(cfg.path)
    args.command_line = cmd
    _setup_logging(args)
    try:
        if getattr(args, "device", None) is not None:
            args.device = resolve_device(args.device)

        with inputs_scope(args):
            code = args.func(args)
    except SpaError as exc:
        return _fail(exc, args.quiet, start, cmd)
    except KeyboardInterrupt:
        print("spa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `spa groups model.onnx | head`: the reader left, nothing to report
        sys.stdout = None  # silence the flush at exit
        return EXIT_OK
    except MemoryError:
        return _fail(SpaError("out of memory; the model, or a size in it, is too large for this machine; "
                              "nothing was written"), args.quiet, start, cmd)
    except Exception as exc:  # noqa: BLE001 - an internal error: one line, the traceback behind -vv
        log.debug("internal error", exc_info=True)
        return _internal(exc, args.quiet, start, cmd)
    if args.quiet < 1:  # stdout stays parseable when it carries a document (--json, --report -)
        print(f"PASSED | {time.perf_counter() - start:.2f} s | {cmd}",
              file=sys.stderr if document_on_stdout(args) else sys.stdout)
    return code
