"""``python -m spa`` runs the same CLI as ``spa``."""

from spa.cli import main

raise SystemExit(main())
