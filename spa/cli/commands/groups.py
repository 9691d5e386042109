"""``spa groups``: list a model's coupled channel groups."""

from __future__ import annotations

import argparse
import json
from typing import Any

from spa.cli.commands.common import (
    EXIT_OK,
    add_common,
    add_inputs_arg,
    add_shape_arg,
    command_doc,
    emit,
    shapes_from_pairs,
)
from spa.pipeline.api import analyze


def run(args: argparse.Namespace) -> int:
    """List the coupled channel groups of MODEL: size, members, and why any is blocked."""

    a = analyze(args.model, args.exclude, prune_norm_axes=args.prune_norm_axes, prune_heads=args.prune_heads,
                shapes=shapes_from_pairs(args.shape))
    rows: list[dict[str, Any]] = []
    for g in a.groups:
        rows.append({
            "id": g.id, "name": g.describe(a.ctx), "units": g.n_units,
            "status": "blocked" if g.blocked else ("prunable" if g.prunable else "single"),
            "reasons": g.blocked, "members": [f"{t}:{ax}" for t, ax in g.members],
            "weights": [f"{t}:{ax}" for t, ax in g.params(a.ctx)],
        })
    if args.json:
        sizes = a.sizes.sizes.to_dict() if a.sizes else None
        print(json.dumps({"model": args.model, "sizes": sizes, "groups": rows}, indent=1))
        return EXIT_OK
    n_ok = sum(r["status"] == "prunable" for r in rows)
    emit(args, f"{args.model}: {len(rows)} groups, {n_ok} prunable, "
               f"{sum(r['status'] == 'blocked' for r in rows)} blocked")
    if a.sizes is not None:
        emit(args, a.sizes.sizes.summary(pruned=False))
    emit(args, f"{'id':>4} {'units':>6}  {'status':9} {'members':>7}  name / reason")
    for r in rows:
        line = f"{r['id']:>4} {r['units']:>6}  {r['status']:9} {len(r['members']):>7}  {r['name']}"
        emit(args, line)
        for reason in r["reasons"]:
            emit(args, f"{'':31}blocked: {reason}")
        if args.verbose:
            emit(args, f"{'':31}members: {', '.join(r['members'])}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("groups", help=command_doc(run).splitlines()[0], description=command_doc(run))
    p.add_argument("model", help="the .onnx model to analyse (never modified)")
    p.add_argument("--json", action="store_true", help="print the groups as JSON alone on stdout")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="glob of node or initializer names whose groups are never pruned (repeatable), as for spa prune")
    p.add_argument("--prune-heads", default="whole", choices=["whole", "dims", "none"],
                   help="attention granularity, as for spa prune")
    p.add_argument("--prune-norm-axes", action="store_true", help="as for spa prune: norm axes are not blocked")
    add_shape_arg(p, "typical whole shape of input NAME (repeatable): the sizes SPA runs the model at to see "
                     "shapes static inference leaves unknown (default: derived from the graph)")
    add_inputs_arg(p)
    add_common(p)
    p.set_defaults(func=run)
    return p
