"""Tiny torch models used as ONNX pruning fixtures.

Every ``ZOO`` entry takes an input of shape ``(N, 3, 32, 32)`` and ends in a
10-class linear classifier.  Models are built deterministically (a fixed
``torch.manual_seed`` per model), have non-trivial BatchNorm statistics and are
returned in eval mode.

``resnet50_like`` and ``mobilenetv2_like`` are full-size (224x224, 1000 classes)
builders for benchmarks; they are deliberately not part of ``ZOO``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 32, 32)
NUM_CLASSES = 10


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _randomize_bn(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial affine parameters and running stats.

    Uses the global torch RNG, so call it right after seeding.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.empty(n).uniform_(0.5, 1.5))
                m.bias.copy_(torch.randn(n) * 0.1)
                m.running_mean.copy_(torch.randn(n) * 0.1)
                m.running_var.copy_(torch.empty(n).uniform_(0.5, 1.5))


def _finalize(model: nn.Module) -> nn.Module:
    _randomize_bn(model)
    return model.eval()


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: nn.Module | None = None,
        padding: int | None = None,
    ) -> None:
        if padding is None:
            padding = kernel_size // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(act)
        super().__init__(*layers)


# ---------------------------------------------------------------------------
# VGG
# ---------------------------------------------------------------------------


class VGG(nn.Module):
    """Conv-BN-ReLU blocks with max pooling, flatten, two-layer MLP head."""

    def __init__(
        self, cfg: Sequence[int | str], num_classes: int = NUM_CLASSES
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        spatial = 32
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                spatial //= 2
            else:
                out_ch = int(item)
                layers += [
                    nn.Conv2d(in_ch, out_ch, 3, padding=1),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(inplace=True),
                ]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * spatial * spatial, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------
# ResNet family
# ---------------------------------------------------------------------------


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block (expansion 1)."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (optionally grouped) -> 1x1 expand (expansion 4)."""

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Generic ResNet / ResNeXt.

    ``small_stem`` uses a single 3x3 stride-1 conv (CIFAR style); otherwise the
    ImageNet 7x7 stride-2 conv + 3x3 max pool stem is used.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        planes: Sequence[int],
        stem_ch: int,
        small_stem: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        if small_stem:
            self.conv1 = nn.Conv2d(3, stem_ch, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, stem_ch, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(stem_ch)
        self.relu = nn.ReLU(inplace=True)
        in_ch = stem_ch
        stages: list[nn.Module] = []
        for i, (n_blocks, p) in enumerate(zip(layers, planes)):
            blocks: list[nn.Module] = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, p, stride, groups, width_per_group))
                in_ch = p * block.expansion
            stages.append(nn.Sequential(*blocks))
        # Named layer1, layer2, ... like the usual ResNet naming.
        self.num_stages = len(stages)
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


# ---------------------------------------------------------------------------
# MobileNetV2
# ---------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 -> 1x1 linear project, residual if shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=nn.ReLU6(inplace=True)))
        layers += [
            ConvBNAct(
                hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6(inplace=True)
            ),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with a configurable inverted-residual table ``(t, c, n, s)``."""

    def __init__(
        self,
        cfg: Sequence[tuple[int, int, int, int]],
        stem_ch: int,
        last_ch: int,
        stem_stride: int,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvBNAct(3, stem_ch, 3, stem_stride, act=nn.ReLU6(inplace=True))
        ]
        in_ch = stem_ch
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        layers.append(ConvBNAct(in_ch, last_ch, 1, act=nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(last_ch, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------
# DenseNet
# ---------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """BN -> ReLU -> 3x3 conv producing ``growth`` new channels."""

    def __init__(self, in_ch: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_ch, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.conv(self.relu(self.norm(x)))


class DenseBlock(nn.Module):
    """Each layer sees the concatenation of the block input and all earlier outputs."""

    def __init__(self, n_layers: int, in_ch: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_ch + i * growth, growth) for i in range(n_layers)
        )
        self.out_channels = in_ch + n_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN -> ReLU -> 1x1 conv -> 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.AvgPool2d(2, 2),
        )


class TinyDenseNet(nn.Module):
    def __init__(
        self,
        stem_ch: int = 16,
        growth: int = 8,
        n_layers: int = 3,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem_ch, 3, 1, 1, bias=False)
        self.block1 = DenseBlock(n_layers, stem_ch, growth)
        mid = self.block1.out_channels // 2
        self.trans1 = Transition(self.block1.out_channels, mid)
        self.block2 = DenseBlock(n_layers, mid, growth)
        self.norm = nn.BatchNorm2d(self.block2.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(self.block2.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.trans1(self.block1(x))
        x = self.relu(self.norm(self.block2(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.fc(x)


# ---------------------------------------------------------------------------
# Squeeze-and-excitation
# ---------------------------------------------------------------------------


class SEConv(nn.Module):
    """SE gate built from 1x1 convolutions: GAP -> conv -> ReLU -> conv -> Sigmoid -> Mul."""

    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(ch, ch // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(ch // reduction, ch, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        return x * s


class SELinear(nn.Module):
    """SE gate built from Linear layers: GAP -> flatten -> Linear -> ReLU -> Linear -> Sigmoid -> Mul."""

    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(ch, ch // reduction)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(ch // reduction, ch)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        return x * s.unsqueeze(-1).unsqueeze(-1)


class SEResBlock(nn.Module):
    """conv-BN-SiLU -> conv-BN -> SE -> + identity -> SiLU."""

    def __init__(self, ch: int, se: nn.Module) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(ch, ch, 3, act=nn.SiLU(inplace=True))
        self.conv2 = ConvBNAct(ch, ch, 3)
        self.se = se
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.conv2(self.conv1(x)))
        return self.act(out + x)


class SENet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, act=nn.SiLU(inplace=True))
        self.block1 = SEResBlock(16, SEConv(16))
        self.down = ConvBNAct(16, 32, 3, 2, act=nn.SiLU(inplace=True))
        self.block2 = SEResBlock(32, SELinear(32))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.down(self.block1(self.stem(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# ---------------------------------------------------------------------------
# Conv -> flatten -> Linear (no global pooling)
# ---------------------------------------------------------------------------


class ConvFlattenLinear(nn.Module):
    """Flatten maps each conv channel to a contiguous block of H*W Linear inputs."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(3, 8, 3, 2, act=nn.ReLU(inplace=True))  # 16x16
        self.conv2 = ConvBNAct(8, 16, 3, 2, act=nn.ReLU(inplace=True))  # 8x8
        self.fc1 = nn.Linear(16 * 8 * 8, 32)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu(self.fc1(x)))


# ---------------------------------------------------------------------------
# Miscellaneous operators
# ---------------------------------------------------------------------------


class MiscOps(nn.Module):
    """A grab bag of activations and shape-preserving / resampling ops."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, act=nn.LeakyReLU(0.1))  # 32x32
        self.conv_hswish = ConvBNAct(16, 16, 3, act=nn.Hardswish())
        self.conv_elu = ConvBNAct(16, 16, 3, act=nn.ELU())  # after split/concat swap
        self.conv_gelu = ConvBNAct(8, 16, 1, act=nn.GELU())  # after split/add
        self.conv_tanh = ConvBNAct(16, 16, 3, padding=0, act=nn.Tanh())  # after F.pad
        self.conv_mish = ConvBNAct(16, 24, 3, 2, act=nn.Mish())  # 16x16
        # after a 2x nearest upsample: 32x32 -> 16x16
        self.conv_prelu = ConvBNAct(24, 24, 3, 2, act=nn.PReLU(24, init=0.2))
        self.deconv = nn.ConvTranspose2d(24, 16, 2, 2)  # 16x16 -> 32x32
        self.deconv_bn = nn.BatchNorm2d(16)
        self.softplus = nn.Softplus()
        self.gate_conv = nn.Conv2d(16, 16, 1)
        self.hsigmoid = nn.Hardsigmoid()
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(16, num_classes)
        with torch.no_grad():  # non-uniform PReLU slopes
            self.conv_prelu[2].weight.uniform_(0.05, 0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_hswish(self.stem(x))
        a, b = torch.split(x, [8, 8], dim=1)
        x = self.conv_elu(torch.cat([b, a], dim=1))
        a, b = torch.split(x, 8, dim=1)
        x = self.conv_gelu(a + b)
        x = self.conv_tanh(F.pad(x, (1, 1, 1, 1)))
        x = self.conv_mish(x)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv_prelu(x)
        x = self.softplus(self.deconv_bn(self.deconv(x)))
        x = x * self.hsigmoid(self.gate_conv(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(torch.tanh(x)))


# ---------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------


def _seeded(seed: int, ctor: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(seed)
    return _finalize(ctor())


def vgg_bn() -> nn.Module:
    return _seeded(0, lambda: VGG([16, 16, "M", 32, "M", 32, "M"]))


def resnet_basic() -> nn.Module:
    return _seeded(1, lambda: ResNet(BasicBlock, [2, 2], [16, 32], stem_ch=16))


def resnet_bottleneck() -> nn.Module:
    return _seeded(2, lambda: ResNet(Bottleneck, [2, 2], [8, 16], stem_ch=16))


def resnext() -> nn.Module:
    # ResNeXt "4x4d": 4 groups of 4 channels in the first stage's grouped 3x3 conv,
    # doubling to 4 groups of 8 in the second stage (as in ResNeXt, widths double
    # per stage).  width = int(planes * width_per_group / 64) * groups.
    return _seeded(
        3,
        lambda: ResNet(
            Bottleneck, [2, 1], [16, 32], stem_ch=16, groups=4, width_per_group=16
        ),
    )


def mobilenetv2() -> nn.Module:
    cfg = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2)]
    return _seeded(4, lambda: MobileNetV2(cfg, stem_ch=16, last_ch=64, stem_stride=1))


def densenet_block() -> nn.Module:
    return _seeded(5, lambda: TinyDenseNet())


def se_block() -> nn.Module:
    return _seeded(6, lambda: SENet())


def conv_flatten_linear() -> nn.Module:
    return _seeded(7, lambda: ConvFlattenLinear())


def misc_ops() -> nn.Module:
    return _seeded(8, lambda: MiscOps())


ZOO: dict[str, Callable[[], nn.Module]] = {
    "vgg_bn": vgg_bn,
    "resnet_basic": resnet_basic,
    "resnet_bottleneck": resnet_bottleneck,
    "resnext": resnext,
    "mobilenetv2": mobilenetv2,
    "densenet_block": densenet_block,
    "se_block": se_block,
    "conv_flatten_linear": conv_flatten_linear,
    "misc_ops": misc_ops,
}


# Full-size benchmark models (224x224 input, 1000 classes); not in ZOO, not committed.
BENCH_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 224, 224)


def resnet50_like() -> nn.Module:
    """ResNet-50 topology: bottleneck blocks [3, 4, 6, 3], output widths 256..2048."""
    return _seeded(
        50,
        lambda: ResNet(
            Bottleneck,
            [3, 4, 6, 3],
            [64, 128, 256, 512],
            stem_ch=64,
            small_stem=False,
            num_classes=1000,
        ),
    )


def mobilenetv2_like() -> nn.Module:
    """MobileNetV2 width 1.0 (the standard inverted-residual table)."""
    cfg = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    return _seeded(
        51,
        lambda: MobileNetV2(
            cfg, stem_ch=32, last_ch=1280, stem_stride=2, num_classes=1000
        ),
    )


BENCHMARKS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int, int]]] = {
    "resnet50_like": (resnet50_like, BENCH_INPUT_SHAPE),
    "mobilenetv2_like": (mobilenetv2_like, BENCH_INPUT_SHAPE),
}
