"""The subcommands of ``spa``, one module each: ``add_parser(sub)`` declares its options and
``run(args)`` does the work (its docstring is the command's help)."""

from __future__ import annotations

from spa.cli.commands import bench, groups, info, prune, sweep, verify

#: In the order ``spa --help`` lists them.
COMMANDS = (prune, groups, verify, bench, sweep, info)
