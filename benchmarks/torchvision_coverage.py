"""Prune torchvision architectures (random weights) exported by both torch exporters.

    pip install torchvision==0.28.0 --no-deps pillow
    python -m benchmarks.torchvision_coverage --cache /tmp/tv --doc docs/coverage-torchvision.md
    python -m benchmarks.torchvision_coverage --models resnet18,swin_t      # a subset

torchvision is not a dependency of SPA; its CPU-less wheel imports only once the
``torchvision::nms``/``qnms`` operators are defined, which this script does first. Nothing is
downloaded: classifiers are built with ``weights=None`` and segmentation models also with
``weights_backbone=None``. Each model is exported (``dynamo=False`` opset 17 without constant
folding, and ``dynamo=True`` unoptimised) and pruned with the command line (see
:mod:`benchmarks.coverage_common`); the table shows groups found / pruned / blocked, MACs before ->
after, the masked-equivalence verdicts and the time taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.coverage_common import Case, define_torchvision_ops, main

CLASSIFIERS = (
    "alexnet,vgg11_bn,resnet18,resnext50_32x4d,wide_resnet50_2,densenet121,googlenet,inception_v3,squeezenet1_0,"
    "mobilenet_v2,mobilenet_v3_small,mobilenet_v3_large,mnasnet0_5,efficientnet_b0,efficientnet_v2_s,"
    "regnet_x_400mf,regnet_y_400mf,shufflenet_v2_x0_5,convnext_tiny,vit_b_16,swin_t,swin_v2_t,maxvit_t"
).split(",")
#: Segmentation models: (name, output names). Their dict outputs become a tuple in this order.
SEGMENTERS = (
    ("fcn_resnet50", ("out", "aux")),
    ("deeplabv3_mobilenet_v3_large", ("out", "aux")),
    ("lraspp_mobilenet_v3_large", ("out",)),
)
SIZES = {"inception_v3": 299}
SEGMENTATION_SIZE = 224


def _models():  # noqa: ANN202 - the torchvision.models module
    define_torchvision_ops()
    import torchvision.models as models

    return models


def _classifier(name: str) -> Callable[[], Any]:
    return lambda: getattr(_models(), name)(weights=None)


def _segmenter(name: str, outputs: Sequence[str]) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        class Outputs(torch.nn.Module):
            """The model with its ``OrderedDict`` result as a tuple, so both exporters name each output."""

            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                result = self.inner(x)
                return tuple(result[k] for k in outputs)

        aux = {"aux_loss": True} if "aux" in outputs else {}
        segmentation = _models().segmentation
        return Outputs(getattr(segmentation, name)(weights=None, weights_backbone=None, **aux))

    return build


def cases() -> list[Case]:
    out = [Case(n, _classifier(n), ((1, 3, SIZES.get(n, 224), SIZES.get(n, 224)),)) for n in CLASSIFIERS]
    out += [Case(n, _segmenter(n, o), ((1, 3, SEGMENTATION_SIZE, SEGMENTATION_SIZE),), o) for n, o in SEGMENTERS]
    return out


def run(argv: Sequence[str] | None = None) -> None:
    define_torchvision_ops()
    import torchvision

    all_cases = cases()
    main(all_cases, [c.name for c in all_cases], "Coverage on torchvision architectures",
         "benchmarks.torchvision_coverage",
         [f"torchvision {torchvision.__version__}"], argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    run()
