"""Compare criteria on the fine-tuning example's classifier: accuracy after pruning, and after a short fine-tune.

    python examples/finetune/compare_criteria.py [--ratio 0.4] [--criteria taylor,snip,grasp,crop,l1,obspa,random]

Trains the CNN of ``finetune.py`` on the bundled 8x8 digits, then for every criterion prunes the
ONNX export at ``--ratio`` (``spa.prune``; data-aware criteria get 256 *training* digits with their
labels as calibration data), measures test accuracy in onnxruntime, applies the plan to a copy of
the torch model (``spa.torch.apply_plan``) and fine-tunes it ``--finetune-epochs`` epochs.
``random`` is the mean over ``--random-seeds`` seeds. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import spa
import spa.torch
from spa.records import Scoring

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import digits, export, make_model, onnx_accuracy, torch_accuracy, train  # noqa: E402

DATA_AWARE = {"taylor", "snip", "grasp", "crop", "obspa", "fluctuation", "activation"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--criteria", default="taylor,snip,grasp,crop,l1,obspa,random")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--random-seeds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x_train, x_test, y_train, y_test = digits()
    torch.manual_seed(args.seed)
    model = train(make_model(), x_train, y_train, args.epochs, 3e-3, args.seed)
    calib = {"input": x_train[:256]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "model.onnx"
        export(model, full)
        before = onnx_accuracy(full, x_test, y_test)
        for name in args.criteria.split(","):
            seeds = range(args.random_seeds) if name == "random" else [args.seed]
            pruned_acc, tuned_acc, t0 = [], [], time.perf_counter()
            for seed in seeds:
                kw = {"calib": calib, "labels": y_train[:256]} if name in DATA_AWARE else {}
                small, plan, _ = spa.prune(full, args.ratio, name, scoring=Scoring(seed=seed, **kw))
                path = Path(tmp) / f"{name}.onnx"
                spa.save_model(small, path)
                pruned_acc.append(onnx_accuracy(path, x_test, y_test))
                sliced = spa.torch.apply_plan(copy.deepcopy(model), plan, weights_from=small)
                train(sliced, x_train, y_train, args.finetune_epochs, 1e-3, args.seed + 1)
                tuned_acc.append(torch_accuracy(sliced, x_test, y_test))
            rows.append((name, np.mean(pruned_acc), np.mean(tuned_acc), time.perf_counter() - t0))
    print(f"digits CNN, test accuracy {before:.1%} before pruning; ratio {args.ratio}; "
          f"fine-tuning {args.finetune_epochs} epoch(s)\n")
    print("| criterion | after pruning | after fine-tuning | seconds |\n|---|---|---|---|")
    for name, acc, tuned, secs in rows:
        label = f"{name} (mean of {args.random_seeds} seeds)" if name == "random" else name
        print(f"| {label} | {acc:.1%} | {tuned:.1%} | {secs:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
