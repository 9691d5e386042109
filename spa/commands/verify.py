"""``spa verify``: masked equivalence of a pruned model against its original."""

from __future__ import annotations

import argparse
import json

from spa.commands.common import DEVICE_HELP, DEVICES, EXIT_OK, add_common, add_inputs_arg, check_seed, emit, shape
from spa.errors import InvalidArgumentError, VerificationError


def run(args: argparse.Namespace) -> int:
    """Check that PRUNED equals ORIGINAL with the plan's removed channels masked to zero.

    Runs both in onnxruntime on the same seeded random inputs (dynamic sizes: a batch of 2, 3
    elsewhere, unless --shape sets them); exits 3 on a mismatch. Without --plan the outputs are
    compared directly.
    """
    from spa.api import verify_models
    from spa.plan import Plan

    check_seed(args.seed)
    plan = Plan.load(args.plan) if args.plan else None
    shapes: dict[str, list[int]] = {}
    for name, dims in args.shape:
        if shapes.setdefault(name, dims) != dims:
            raise InvalidArgumentError(f"--shape {name} given twice with different sizes")
    v = verify_models(args.original, args.pruned, plan, seed=args.seed, atol=args.atol, rtol=args.rtol,
                      device=args.device, shapes=shapes or None)
    if args.json:
        print(json.dumps(v.to_dict(), indent=1))
    else:
        for o in v.outputs:
            emit(args, f"  {o.name}: max abs diff {o.max_abs:.3g} (output scale {o.scale:.3g}) {'ok' if o.ok else 'MISMATCH'}")
        emit(args, v.summary())
    if not v.passed:
        raise VerificationError(v.summary())
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help=run.__doc__.splitlines()[0], description=run.__doc__)  # type: ignore[union-attr]
    p.add_argument("original")
    p.add_argument("pruned")
    p.add_argument("--plan", help="the plan that produced PRUNED (without it, outputs are compared as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=float, default=None, help="tolerance relative to the output's max |value| (default 1e-4)")
    p.add_argument("--shape", action="append", type=shape, default=[], metavar="NAME:D1xD2x...",
                   help="whole shape of input NAME (repeatable); default: dynamic sizes 2 (axis 0) and 3 (others)")
    add_inputs_arg(p)
    p.add_argument("--device", default="cpu", choices=DEVICES, help=DEVICE_HELP)
    p.add_argument("--json", action="store_true")
    add_common(p)
    p.set_defaults(func=run)
    return p
