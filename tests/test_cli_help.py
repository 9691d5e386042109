"""Every argument of every subcommand says what it is for in ``--help``, and the help states the
defaults the code uses (``--stats``), and options shared by prune and sweep exist in both."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spa.cli.app import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_argument_has_help() -> None:
    missing = [f"spa {name} {a.dest}" for name, p in _subparsers().items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, f"arguments without help text: {missing}"


def test_stats_help_names_the_default_in_use() -> None:
    from spa.criteria.obspa import OBSPACriterion

    stats = next(a for a in _subparsers()["prune"]._actions if a.dest == "stats")
    assert stats.default == "auto" and "auto (default" in stats.help
    assert OBSPACriterion(stats="auto").stats == "synthetic"  # what the help says auto means without --calib


def test_sweep_takes_prune_heads(run_spa: Any, zoo: Path, tmp_path: Path) -> None:
    """``spa sweep --prune-heads`` reaches the pruner: head dims remove other units than whole heads."""
    import json

    model = zoo / "transformers" / "bert_nn.ts.onnx"
    removed = {}
    for heads in ("whole", "dims"):
        res = run_spa("sweep", model, "--ratios", "0.3", "--no-bench", "--round-to", "1", "--prune-heads", heads,
                      "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        last = json.loads(res.stdout)["points"][-1]
        removed[heads] = (last["units_removed"], last["params"])
    assert removed["whole"] != removed["dims"], removed
