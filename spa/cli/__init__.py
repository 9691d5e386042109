"""The ``spa`` command line: the parser and entry point (:mod:`.app`), settings files
(:mod:`.config`) and one module per subcommand (:mod:`.commands`)."""

from spa.cli.app import main

__all__ = ["main"]
