"""Settings for ``spa prune`` from ``spa.toml`` or ``[tool.spa]`` in ``pyproject.toml``.

Lookup (unless ``--config FILE`` or ``--no-config``): starting in the current directory and
going up through its parents, the first directory that has a ``spa.toml`` or a
``pyproject.toml`` with a ``[tool.spa]`` table wins (``spa.toml`` first). The search stops after
the first directory that holds ``.git`` (the repository root) or at the filesystem root.

Keys are the long option names of ``spa prune`` without the dashes (``ratio = 0.4``,
``criterion = "l2"``, ``max-drift = 0.05``, ``exclude = ["fc*"]``; ``_`` works for ``-``).
Flags take ``true``/``false``. Relative paths are relative to the file's folder. Options given on
the command line win; a list given on the command line (``--exclude``) replaces the file's list.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from spa.errors import ConfigError

SPA_TOML = "spa.toml"
PYPROJECT = "pyproject.toml"
#: Options that cannot come from a file.
NOT_CONFIGURABLE = {"help", "config", "no-config", "version"}
#: Options whose values are paths (made relative to the config file's folder).
PATH_DESTS = {"output", "plan", "report", "markdown", "from_plan", "calib", "eval"}

_TOOL_SPA = re.compile(r"^\s*\[\s*tool\s*\.\s*spa\s*[\].]", re.M)


@dataclass
class Config:
    path: Path
    #: argparse ``dest`` -> converted value.
    values: dict[str, Any] = field(default_factory=dict)
    #: ``dest`` of list options (``--exclude``): used only when the command line gives none.
    lists: dict[str, list[str]] = field(default_factory=dict)


def _toml() -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading spa.toml / [tool.spa] needs Python >= 3.11 or the `tomli` package "
                              "(pip install tomli); or pass --no-config") from None
    return tomllib


def _parse(path: Path) -> dict[str, Any]:
    toml = _toml()
    try:
        with open(path, "rb") as f:
            return toml.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _has_tool_spa(path: Path) -> bool:
    try:
        return bool(_TOOL_SPA.search(path.read_text(errors="replace")))
    except OSError:
        return False


def find_config(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file that applies in ``start`` (default: the current directory), or None."""
    d = Path(start or Path.cwd()).resolve()
    while True:
        if (d / SPA_TOML).is_file():
            return d / SPA_TOML
        if (d / PYPROJECT).is_file() and _has_tool_spa(d / PYPROJECT):
            return d / PYPROJECT
        if (d / ".git").exists() or d.parent == d:
            return None
        d = d.parent


def read_table(path: Path) -> dict[str, Any]:
    """The settings table of ``path``: ``[tool.spa]`` of a pyproject.toml, else the whole file."""
    data = _parse(path)
    if path.name == PYPROJECT:
        table = data.get("tool", {}).get("spa") if isinstance(data.get("tool"), dict) else None
        if table is None:
            raise ConfigError(f"{path}: has no [tool.spa] table")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: tool.spa must be a table")
        return table
    return data


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long option name without dashes -> action, for every configurable option of ``parser``."""
    out = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt[2:] not in NOT_CONFIGURABLE:
                out[opt[2:]] = action
    return out


def _convert(key: str, value: Any, action: argparse.Action, where: str) -> Any:
    bad = f"{where}: {key} = {value!r}"
    if isinstance(action, argparse._CountAction):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{bad}: expected a count such as 1")
        return value
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{bad}: expected true or false")
        return value if action.const is True else not value
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{bad}: expected a string or a list of strings")
        return [_convert_one(key, v, action, where) for v in items]
    if isinstance(value, (bool, list, dict)):
        raise ConfigError(f"{bad}: expected a {'string' if action.type is None else 'number or string'}")
    return _convert_one(key, value, action, where)


def _convert_one(key: str, value: Any, action: argparse.Action, where: str) -> Any:
    text = str(value)
    try:
        out = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {key} = {value!r}: {exc}") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{where}: {key} = {value!r}: choose one of {', '.join(map(str, action.choices))}")
    return out


def load(path: str | os.PathLike[str], parser: argparse.ArgumentParser) -> Config:
    """Read ``path`` and convert its keys with ``parser``'s option types; unknown keys are errors."""
    p = Path(path)
    table = read_table(p)
    options = _options(parser)
    where = f"{p} [tool.spa]" if p.name == PYPROJECT else str(p)
    cfg = Config(p)
    for raw_key, value in table.items():
        key = raw_key.replace("_", "-")
        action = options.get(key)
        if action is None:
            near = difflib.get_close_matches(key, list(options), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            if key == "tool" and p.name != PYPROJECT:
                hint = " (in spa.toml the keys go at the top level, without [tool.spa])"
            raise ConfigError(f"{where}: unknown key '{raw_key}'{hint}; keys are spa prune's long option names, "
                              f"e.g. ratio, criterion, exclude, max-drift")
        converted = _convert(key, value, action, where)
        if action.dest in PATH_DESTS:
            converted = _relative_to(p.parent, converted)
        if isinstance(action, argparse._AppendAction):
            cfg.lists[action.dest] = converted
        else:
            cfg.values[action.dest] = converted
    return cfg


def _relative_to(folder: Path, value: str) -> str:
    q = Path(value).expanduser()
    if q.is_absolute():
        return str(q)
    full = folder / q
    try:
        return os.path.relpath(full)
    except ValueError:  # another drive on Windows
        return str(full)


class _Bad(Exception):
    pass


class _Quiet(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Bad(message)


def prescan(argv: list[str]) -> tuple[str | None, bool]:
    """``(--config FILE, --no-config)`` from ``argv`` before the full parse (which needs the file's defaults)."""
    pre = _Quiet(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--no-config", action="store_true")
    try:
        ns, _ = pre.parse_known_args(argv)
    except _Bad:  # e.g. `--config` without a value: the full parse reports it
        return None, False
    return ns.config, ns.no_config


def apply(cfg: Config, parser: argparse.ArgumentParser) -> None:
    """Make the file's values ``parser``'s defaults, so that command-line options override them."""
    parser.set_defaults(**cfg.values)


def fill_lists(cfg: Config, args: argparse.Namespace) -> None:
    """List options the command line left empty take the file's list."""
    for dest, values in cfg.lists.items():
        if not getattr(args, dest, None):
            setattr(args, dest, list(values))
