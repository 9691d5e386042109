"""``spa verify``: masked equivalence of a pruned model against its original."""

from __future__ import annotations

import argparse
import json

from spa.cli.commands.common import (
    DEVICE_HELP,
    DEVICES,
    EXIT_OK,
    add_common,
    add_inputs_arg,
    add_shape_arg,
    check_seed,
    command_doc,
    emit,
    shapes_from_pairs,
)
from spa.errors import VerificationError
from spa.pipeline.api import verify_models
from spa.planning.plan import Plan


def run(args: argparse.Namespace) -> int:
    """Check that PRUNED equals ORIGINAL with the plan's removed channels masked to zero.

    Runs both in onnxruntime on the same seeded random inputs, at the typical input sizes (--shape,
    or derived from the graph) and at a second size of every dynamic axis; exits 3 on a mismatch
    or when the pruned model fails at one of them. Without --plan the outputs are compared directly.
    """

    check_seed(args.seed)
    plan = Plan.load(args.plan) if args.plan else None
    v = verify_models(args.original, args.pruned, plan, seed=args.seed, atol=args.atol, rtol=args.rtol,
                      device=args.device, shapes=shapes_from_pairs(args.shape))
    if args.json:
        print(json.dumps(v.to_dict(), indent=1))
    else:
        for o in v.outputs:
            verdict = "drift" if o.ok is None else "ok" if o.ok else "MISMATCH"
            emit(args, f"  {o.name}: max abs diff {o.max_abs:.3g} (output scale {o.scale:.3g}) {verdict}")
        if v.runs:
            emit(args, "input sizes: " + "; ".join(" ".join(f"{k}:{'x'.join(map(str, d))}" for k, d in r.items())
                                                   for r in v.runs))
        emit(args, v.summary())
    if not v.passed:
        raise VerificationError(v.summary())
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help=command_doc(run).splitlines()[0], description=command_doc(run))
    p.add_argument("original", help="the model before pruning (.onnx)")
    p.add_argument("pruned", help="the pruned model (.onnx) to compare with it")
    p.add_argument("--plan", help="the plan that produced PRUNED (without it, outputs are compared as is)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic test inputs")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=float, default=None, help="tolerance relative to the output's max |value| (default 1e-4)")
    add_shape_arg(p, "typical whole shape of input NAME (repeatable); both models also run at a second size of "
                     "every dynamic axis. Default: sizes derived from the graph (strides, pooling, resizing)")
    add_inputs_arg(p)
    p.add_argument("--device", default="cpu", choices=DEVICES, help=DEVICE_HELP)
    p.add_argument("--json", action="store_true", help="print the result as JSON alone on stdout")
    add_common(p)
    p.set_defaults(func=run)
    return p
