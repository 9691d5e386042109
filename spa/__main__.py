"""``python -m spa`` runs the same CLI as ``spa``."""

from spa.cli.app import main

raise SystemExit(main())
