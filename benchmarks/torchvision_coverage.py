"""Prune torchvision architectures (random weights) exported by both torch exporters.

    pip install torchvision==0.28.0 --no-deps pillow
    python -m benchmarks.torchvision_coverage [--models resnet18,densenet121] [--ratio 0.4]

torchvision is not a dependency of SPA; its CPU-less wheel imports only once the
``torchvision::nms``/``qnms`` operators are defined, which this script does first. Each model
is exported (``dynamo=False`` opset 17 without constant folding, and ``dynamo=True`` unoptimised)
and pruned with ``spa.prune(..., verify_result=True)``; the table shows groups found / pruned /
blocked, MACs before -> after, and the masked-equivalence verdict.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

log = logging.getLogger("torchvision_coverage")

DEFAULT_MODELS = (
    "alexnet,vgg11_bn,resnet18,resnext50_32x4d,densenet121,googlenet,inception_v3,squeezenet1_0,"
    "mobilenet_v3_small,mnasnet0_5,efficientnet_b0,regnet_x_400mf,shufflenet_v2_x0_5,convnext_tiny"
)


def _import_torchvision():  # noqa: ANN202 - returns the torchvision.models module
    import torch

    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - keeps the ops defined
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _import_torchvision.lib = lib  # type: ignore[attr-defined]
    import torchvision.models as models

    return models


def export(name: str, exporter: str, out: Path) -> None:
    import torch

    models = _import_torchvision()
    torch.manual_seed(0)
    module = getattr(models, name)(weights=None).eval()
    size = 299 if name == "inception_v3" else 224
    x = torch.randn(1, 3, size, size)
    kw = {"input_names": ["input"], "output_names": ["logits"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "ts":
            torch.onnx.export(module, (x,), str(out), dynamo=False, opset_version=17, do_constant_folding=False,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **kw)
        else:
            torch.onnx.export(module, (x,), str(out), dynamo=True, optimize=False, external_data=False, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--ratio", type=float, default=0.4)
    ap.add_argument("--cache", type=Path, default=None, help="keep exported files here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import spa

    cache = args.cache or Path(tempfile.mkdtemp(prefix="spa-tv-"))
    cache.mkdir(parents=True, exist_ok=True)
    print("| model | exporter | groups found / pruned / blocked | MACs before → after | verify | seconds | blocked because |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for exporter in ("ts", "dynamo"):
            path = cache / f"{name}.{exporter}.onnx"
            if not path.exists():
                log.info("exporting %s (%s)", name, exporter)
                export(name, exporter, path)
            t0 = time.perf_counter()
            try:
                _, _, r = spa.prune(path, ratio=args.ratio, verify_result=True)
            except spa.SpaError as exc:
                print(f"| {name} | {exporter} | FAIL | | | | {exc} |")
                continue
            v = "PASS" if r.verification and r.verification["passed"] else "FAIL"
            reasons = sorted({b.reason.split(";")[0][:70] for b in r.blocked if "model output" not in b.reason})
            print(f"| {name} | {exporter} | {r.groups_total} / {r.groups_pruned} / {len(r.blocked)} | "
                  f"{r.before.macs / 1e9:.2f}G → {r.after.macs / 1e9:.2f}G | {v} | {time.perf_counter() - t0:.1f} | "
                  f"{'; '.join(reasons[:2]) or 'only the classifier output'} |", flush=True)


if __name__ == "__main__":
    main()
