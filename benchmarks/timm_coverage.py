"""Prune timm architectures (random weights) exported by both torch exporters.

    python -m venv --system-site-packages /work/venvs/timm
    /work/venvs/timm/bin/pip install --no-deps timm==1.0.31 && /work/venvs/timm/bin/pip install huggingface_hub safetensors pyyaml
    /work/venvs/timm/bin/python -m benchmarks.timm_coverage --cache /tmp/timm --doc docs/coverage-timm.md
    /work/venvs/timm/bin/python -m benchmarks.timm_coverage --models resnet18,swin_tiny_patch4_window7_224

timm is not a dependency of SPA; it goes in its own virtual environment that sees the system's
torch (``--no-deps`` keeps pip from pulling another torch). timm imports torchvision, whose CPU-less
wheel imports only once the ``torchvision::nms``/``qnms`` operators are defined, which this script
does first. Models are built with ``timm.create_model(name, pretrained=False, exportable=True)``
(nothing is downloaded) at the small input sizes below, exported with both torch exporters and
pruned with the command line (see :mod:`benchmarks.coverage_common`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.coverage_common import Case, define_torchvision_ops, main

#: name -> (input size, extra create_model arguments). Transformers whose token count or
#: position table follows the image size get it through ``img_size``.
MODELS: dict[str, tuple[int, dict[str, Any]]] = {
    "resnet18": (128, {}),
    "resnetv2_50x1_bit": (128, {}),  # pre-activation, GroupNorm + weight-standardised convs
    "nf_resnet26": (128, {}),  # normaliser-free, scaled weight-standardised convs
    "res2net50_26w_4s": (128, {}),
    "dpn68": (128, {}),
    "efficientnet_b0": (128, {}),
    "mobilenetv3_large_100": (128, {}),
    "mobilenetv4_conv_small": (128, {}),
    "ghostnet_100": (128, {}),
    "rexnet_100": (128, {}),
    "regnetx_002": (128, {}),
    "regnety_002": (128, {}),
    "repvgg_a0": (128, {}),
    "cspdarknet53": (128, {}),
    "cspresnet50": (128, {}),
    "dla34": (128, {}),
    "hrnet_w18_small": (128, {}),
    "convnext_atto": (128, {}),
    "edgenext_xx_small": (128, {}),
    "poolformer_s12": (128, {}),
    "convmixer_768_32": (112, {}),
    "mixer_s16_224": (128, {"img_size": 128}),
    "vit_tiny_patch16_224": (128, {"img_size": 128}),
    "eva02_tiny_patch14_224": (112, {"img_size": 112}),
    "swin_tiny_patch4_window7_224": (112, {"img_size": 112}),
    "levit_128s": (128, {"img_size": 128}),
    "mobilevit_xxs": (128, {}),
    "coat_lite_tiny": (128, {"img_size": 128}),
    "pvt_v2_b0": (128, {}),
    "efficientformer_l1": (224, {}),
    "fastvit_t8": (128, {}),
    "tiny_vit_5m_224": (224, {}),
    # further families, for --models all or a subset
    "deit_tiny_patch16_224": (128, {"img_size": 128}),
    "cait_xxs24_224": (128, {"img_size": 128}),
    "xcit_nano_12_p16_224": (128, {"img_size": 128}),
    "pit_ti_224": (128, {"img_size": 128}),
    "coatnet_nano_rw_224": (224, {}),
    "davit_tiny": (128, {}),
    "focalnet_tiny_srf": (128, {}),
    "efficientvit_b0": (128, {}),
    "inception_next_atto": (128, {}),
    "skresnet18": (128, {}),
    "resnest14d": (128, {}),
    "hgnetv2_b0": (128, {}),
    "repvit_m0_9": (128, {}),
    "mobileone_s0": (128, {}),
    "ese_vovnet19b_dw": (128, {}),
    "lcnet_050": (128, {}),
    "gernet_s": (128, {}),
}
DEFAULT = list(MODELS)[: list(MODELS).index("tiny_vit_5m_224") + 1]


def _builder(name: str, kwargs: dict[str, Any]) -> Callable[[], Any]:
    def build() -> Any:
        define_torchvision_ops()
        import timm

        return timm.create_model(name, pretrained=False, exportable=True, **kwargs)

    return build


def cases() -> list[Case]:
    return [Case(n, _builder(n, kw), ((1, 3, s, s),)) for n, (s, kw) in MODELS.items()]


def run(argv: Sequence[str] | None = None) -> None:
    define_torchvision_ops()
    import timm

    main(cases(), DEFAULT, "Coverage on timm architectures",
         "benchmarks.timm_coverage",
         [f"timm {timm.__version__}"], argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    run()
