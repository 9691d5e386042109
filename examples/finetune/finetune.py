"""Prune a trained PyTorch classifier with SPA and fine-tune it back, end to end.

    python examples/finetune/finetune.py [--ratio 0.5] [--criterion l1] [--epochs 10] [--finetune-epochs 3]

1. train a small CNN on scikit-learn's bundled 8x8 digits (1,347 train / 450 test images);
2. export it to ONNX with names kept (TorchScript exporter, ``do_constant_folding=False``);
3. ``spa prune model.onnx --ratio R --criterion C -o small.onnx --plan plan.json`` (the real CLI);
4. ``spa.torch.apply_plan(model, plan, weights_from="small.onnx")``: the torch model now has the
   pruned shapes and computes what ``small.onnx`` computes (checked);
5. export the sliced model again and compare its initializers with ``small.onnx`` (equal);
6. fine-tune a few epochs and export ``small.finetuned.onnx``.

It prints the test accuracy before pruning, after pruning (no fine-tuning) and after fine-tuning.
Everything it writes goes to ``--out`` (default ``finetune-out`` in the current folder). Needs
``pip install -e '.[torch]' scikit-learn`` (run from the repository root, or with SPA installed).
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

import spa
import spa.torch


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised 8x8 digits ``(N, 1, 8, 8)`` float32 and int64 labels: train and test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = ((d.images / 16.0 - 0.3) / 0.4).astype(np.float32)[:, None]
    return train_test_split(x, d.target.astype(np.int64), test_size=0.25, random_state=seed, stratify=d.target)


def make_model() -> nn.Module:
    """Conv-BN-ReLU x3 (32, 64, 64 channels), a max-pool, then a 128-unit hidden layer."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)  # created here: apply_plan makes new parameters
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(ys), generator=gen).split(64):
            loss = F.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def export(model: nn.Module, path: Path) -> None:
    """TorchScript export that keeps parameter names (no constant folding: BatchNorm stays a node)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 1, 8, 8),), buf, dynamo=False, do_constant_folding=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    path.write_bytes(buf.getvalue())


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((sess.run(None, {"input": x})[0].argmax(1) == y).mean())


@torch.no_grad()
def torch_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_initializers(a: Path, b: Path) -> bool:
    """Both models have the same initializer names, and equal values under each name."""
    ta = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(a)).graph.initializer}
    tb = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(b)).graph.initializer}
    return ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of channels to remove (default 0.5)")
    p.add_argument("--criterion", default="l1", help="SPA criterion (default l1; taylor etc. get --calib data)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs after pruning (default 3)")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate of training (fine-tuning uses a third)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a busy machine)")
    p.add_argument("--out", type=Path, default=Path("finetune-out"), help="folder for the models (default finetune-out)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = digits()

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model = train(make_model(), x_train, y_train, args.epochs, args.lr, args.seed)
    full = args.out / "model.onnx"
    export(model, full)
    before = onnx_accuracy(full, x_test, y_test)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.1f} s: test accuracy {before:.2%}, "
          f"{params(model):,} parameters -> {full}")

    small, plan = args.out / "small.onnx", args.out / "plan.json"
    cmd = ["spa", "prune", str(full), "--ratio", str(args.ratio), "--criterion", args.criterion,
           "-o", str(small), "--plan", str(plan), "-q"]
    if args.criterion in ("taylor", "snip", "grasp", "crop", "obspa", "fluctuation", "activation"):
        calib = args.out / "calib.npz"
        np.savez(calib, input=x_train[:256], labels=y_train[:256])  # training digits, never test digits
        cmd += ["--calib", str(calib)]
    print("$", shlex.join(cmd))
    proc = subprocess.run([sys.executable, "-m", "spa", *cmd[1:]], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    pruned = onnx_accuracy(small, x_test, y_test)

    spa.torch.apply_plan(model, spa.Plan.load(plan), weights_from=small)
    sess = ort.InferenceSession(str(small), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        gap = float(np.abs(model(torch.from_numpy(x_test)).numpy() - sess.run(None, {"input": x_test})[0]).max())
    again = args.out / "small.reexported.onnx"
    export(model, again)
    equal = same_initializers(small, again)
    print(f"apply_plan: {params(model):,} parameters; torch vs small.onnx max |diff| {gap:.1e}; "
          f"re-exported initializers equal SPA's: {'yes' if equal else 'NO'}")

    t1 = time.perf_counter()
    train(model, x_train, y_train, args.finetune_epochs, args.lr / 3, args.seed + 1)
    tuned = torch_accuracy(model, x_test, y_test)
    export(model, args.out / "small.finetuned.onnx")
    print(f"fine-tuned {args.finetune_epochs} epochs in {time.perf_counter() - t1:.1f} s -> "
          f"{args.out / 'small.finetuned.onnx'}")
    print(f"\ntest accuracy: before pruning {before:.2%} | pruned (ratio {args.ratio}, {args.criterion}) "
          f"{pruned:.2%} | after fine-tuning {tuned:.2%}")
    if args.json:
        args.json.write_text(json.dumps({
            "before": before, "pruned": pruned, "finetuned": tuned, "ratio": args.ratio, "criterion": args.criterion,
            "params_before": int(sum(numpy_helper.to_array(i).size for i in onnx.load(str(full)).graph.initializer)),
            "params_after": params(model), "torch_vs_onnx_max_abs": gap, "reexport_equal": equal,
        }, indent=1) + "\n")
    return 0 if equal and gap < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
