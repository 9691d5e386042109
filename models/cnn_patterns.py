"""Harder CNN patterns as ONNX pruning fixtures: ConvNeXt, EfficientNet, Inception, Swin, detection.

Every model takes ``input`` ``(N, 3, 32, 32)``, is seeded, has randomised BatchNorm statistics
and LayerNorm / layer-scale parameters (so no pruned channel is trivially zero), and is in eval
mode.

| model | what it exercises |
|---|---|
| ``convnext`` | ConvNeXt blocks: depthwise 7x7, permute NCHW->NHWC, LayerNorm over channels, Linear 4x expand, GELU, Linear, layer scale (in NHWC as in the paper, and after the permute back as in torchvision), residual; channels-first LayerNorm2d (permute, LN, permute back) in the stem, the downsampling layer and the head |
| ``efficientnet`` | MBConv: expand 1x1, depthwise 3x3 / 5x5 (stride 1 and 2), squeeze-and-excitation with SiLU (x*sigmoid(x)) and a sigmoid gate, linear projection, residual; a block without expansion |
| ``inception`` | Inception blocks: parallel 1x1, 1x1->3x3, 1x1->5x5 and 1x1->3x3->3x3 branches and a maxpool->1x1 branch concatenated on channels, read by the next block and by a 1x1 conv |
| ``swin`` | Swin blocks: patch embedding, ``torch.roll`` shifts, window partition / reverse by view+permute, window attention (fused QKV, relative-position bias gathered from a table, shifted-window mask), MLP, patch merging (strided slices concatenated, LayerNorm, Linear) |
| ``detector`` | stride-2 backbone, FPN top-down path (nearest and bilinear ``F.interpolate``, lateral Adds), a UNet-style decoder (ConvTranspose, skip Concats), a shared head tower applied to two levels, and three outputs: ``cls`` (5 classes), ``box`` (4 coordinates), ``seg`` (3 classes at full resolution) |

Build with ``python -m models.build_patterns`` (both torch exporters, into ``models/zoo/patterns``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.zoo import INPUT_SHAPE, NUM_CLASSES, ConvBNAct, _randomize_bn

__all__ = ["INPUT_SHAPE", "OUTPUTS", "PATTERNS"]


# ---------------------------------------------------------------------------
# ConvNeXt
# ---------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor, as torchvision's ConvNeXt writes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dw 7x7 -> NHWC -> LN -> Linear 4x -> GELU -> Linear -> gamma -> NCHW -> + x.

    ``scale_nchw`` puts the layer scale after the permute back, with shape ``(C, 1, 1)``
    (torchvision); otherwise it is a ``(C,)`` vector applied in NHWC (the paper's code).
    """

    def __init__(self, dim: int, scale_nchw: bool) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.scale_nchw = scale_nchw
        shape = (dim, 1, 1) if scale_nchw else (dim,)
        self.gamma = nn.Parameter(torch.empty(shape).uniform_(0.5, 1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.scale_nchw:
            y = self.gamma * y.permute(0, 3, 1, 2)
        else:
            y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + y


class ConvNeXt(nn.Module):
    def __init__(self, dims: tuple[int, int] = (16, 32), num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 2, stride=2), LayerNorm2d(dims[0], eps=1e-6))  # 16x16
        self.stage1 = nn.Sequential(ConvNeXtBlock(dims[0], scale_nchw=False), ConvNeXtBlock(dims[0], scale_nchw=True))
        self.down = nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, stride=2))  # 8x8
        self.stage2 = nn.Sequential(ConvNeXtBlock(dims[1], scale_nchw=True))
        self.head_norm = LayerNorm2d(dims[1], eps=1e-6)
        self.fc = nn.Linear(dims[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        x = self.head_norm(F.adaptive_avg_pool2d(x, 1))
        return self.fc(torch.flatten(x, 1))


# ---------------------------------------------------------------------------
# EfficientNet
# ---------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """GAP -> 1x1 conv -> SiLU -> 1x1 conv -> sigmoid -> channel-wise Mul (as torchvision's MBConv)."""

    def __init__(self, ch: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(ch, squeeze, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(squeeze, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """[expand 1x1 -> BN -> SiLU] -> depthwise kxk -> BN -> SiLU -> SE -> project 1x1 -> BN [+ x]."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.SiLU()))
        layers += [
            ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU()),
            SqueezeExcite(hidden, max(1, cin // 4)),
            ConvBNAct(hidden, cout, 1),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class EfficientNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act=nn.SiLU())  # 16x16
        self.blocks = nn.Sequential(
            MBConv(16, 16, 1, 3, 1),  # no expansion, residual
            MBConv(16, 24, 4, 3, 2),  # 8x8
            MBConv(24, 24, 4, 5, 1),  # residual, 5x5
            MBConv(24, 32, 4, 5, 2),  # 4x4
        )
        self.head = ConvBNAct(32, 64, 1, act=nn.SiLU())
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


# ---------------------------------------------------------------------------
# Inception
# ---------------------------------------------------------------------------


class InceptionBlock(nn.Module):
    """1x1 | 1x1->3x3 | 1x1->5x5 (or 1x1->3x3->3x3) | maxpool->1x1, concatenated on channels."""

    def __init__(self, cin: int, c1: int, c3: tuple[int, int], c5: tuple[int, int], pool: int,
                 double3x3: bool) -> None:
        super().__init__()
        relu = nn.ReLU
        self.b1 = ConvBNAct(cin, c1, 1, act=relu())
        self.b2 = nn.Sequential(ConvBNAct(cin, c3[0], 1, act=relu()), ConvBNAct(c3[0], c3[1], 3, act=relu()))
        if double3x3:
            self.b3 = nn.Sequential(ConvBNAct(cin, c5[0], 1, act=relu()), ConvBNAct(c5[0], c5[1], 3, act=relu()),
                                    ConvBNAct(c5[1], c5[1], 3, act=relu()))
        else:
            self.b3 = nn.Sequential(ConvBNAct(cin, c5[0], 1, act=relu()), ConvBNAct(c5[0], c5[1], 5, act=relu()))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), ConvBNAct(cin, pool, 1, act=relu()))
        self.out_channels = c1 + c3[1] + c5[1] + pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class Inception(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act=nn.ReLU())  # 16x16
        self.mixed1 = InceptionBlock(16, 8, (8, 12), (4, 8), 4, double3x3=False)
        self.pool = nn.MaxPool2d(3, 2, 1)  # 8x8
        self.mixed2 = InceptionBlock(self.mixed1.out_channels, 12, (8, 16), (8, 12), 8, double3x3=True)
        self.conv = ConvBNAct(self.mixed2.out_channels, 48, 1, act=nn.ReLU())
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mixed2(self.pool(self.mixed1(self.stem(x))))
        x = self.conv(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------------------
# Swin
# ---------------------------------------------------------------------------


def _relative_position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return (rel[..., 0] * (2 * ws - 1) + rel[..., 1]).flatten()  # (ws^4,)


def _shift_mask(size: int, ws: int, shift: int) -> torch.Tensor:
    """(windows, ws², ws²) additive mask: -100 between tokens from different regions after the roll."""
    img = torch.zeros(1, size, size, 1)
    cnt = 0
    for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, h, w, :] = cnt
            cnt += 1
    win = _partition(img, ws).squeeze(-1)  # (windows, ws²)
    diff = win[:, None, :] - win[:, :, None]
    return diff.ne(0).float() * -100.0


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, ws², C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _reverse(x: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * windows, ws², C) -> (B, H, W, C)."""
    c = x.shape[-1]
    x = x.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int) -> None:
        super().__init__()
        self.heads, self.ws, self.scale = heads, ws, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.5)
        self.register_buffer("bias_index", _relative_position_index(ws), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.bias_table[self.bias_index].view(n, n, self.heads).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, size: int, ws: int, shift: int) -> None:
        super().__init__()
        self.size, self.ws, self.shift = size, ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        if shift:
            self.register_buffer("mask", _shift_mask(size, ws, shift), persistent=False)
        else:
            self.mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = _reverse(self.attn(_partition(y, self.ws), self.mask), self.ws, self.size, self.size)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated on channels (strided slices), LayerNorm, Linear 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2, ws: int = 4, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)  # 8x8 tokens
        self.patch_norm = nn.LayerNorm(dim)
        self.stage1 = nn.Sequential(SwinBlock(dim, heads, 8, ws, 0), SwinBlock(dim, heads, 8, ws, ws // 2))
        self.merge = PatchMerging(dim)  # 4x4 tokens, 2 * dim
        self.stage2 = nn.Sequential(SwinBlock(2 * dim, 2 * heads, 4, ws, 0))
        self.norm = nn.LayerNorm(2 * dim)
        self.fc = nn.Linear(2 * dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_norm(self.patch(x).permute(0, 2, 3, 1))
        x = self.stage2(self.merge(self.stage1(x)))
        return self.fc(self.norm(x).mean(dim=(1, 2)))


# ---------------------------------------------------------------------------
# Detection / segmentation
# ---------------------------------------------------------------------------


class Detector(nn.Module):
    """Backbone (strides 2, 4, 8, 16) -> FPN on strides 4..16 -> shared heads on P3/P4 + a UNet seg decoder."""

    def __init__(self, classes: int = 5, seg_classes: int = 3, width: int = 16) -> None:
        super().__init__()
        relu = nn.ReLU
        self.c1 = ConvBNAct(3, 16, 3, 2, act=relu())  # 16x16
        self.c2 = ConvBNAct(16, 24, 3, 2, act=relu())  # 8x8
        self.c3 = nn.Sequential(ConvBNAct(24, 32, 3, 2, act=relu()), ConvBNAct(32, 32, 3, act=relu()))  # 4x4
        self.c4 = ConvBNAct(32, 48, 3, 2, act=relu())  # 2x2
        self.lat2, self.lat3, self.lat4 = nn.Conv2d(24, width, 1), nn.Conv2d(32, width, 1), nn.Conv2d(48, width, 1)
        self.smooth3 = ConvBNAct(width, width, 3, act=relu())
        self.smooth2 = ConvBNAct(width, width, 3, act=relu())
        # one tower and two predictors, shared by the P2 and P3 levels (as RetinaNet / FCOS)
        self.tower = ConvBNAct(width, width, 3, act=relu())
        self.cls = nn.Conv2d(width, classes, 3, padding=1)
        self.box = nn.Conv2d(width, 4, 3, padding=1)
        # UNet-style decoder to full resolution
        self.up1 = nn.ConvTranspose2d(width, 16, 2, stride=2)  # 16x16
        self.dec1 = ConvBNAct(16 + 16, 16, 3, act=relu())
        self.up2 = nn.ConvTranspose2d(16, 8, 2, stride=2)  # 32x32
        self.dec2 = ConvBNAct(8 + 3, 8, 3, act=relu())
        self.seg = nn.Conv2d(8, seg_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.c1(x)
        f2 = self.c2(f1)
        f3 = self.c3(f2)
        f4 = self.c4(f3)
        p4 = self.lat4(f4)
        p3 = self.smooth3(self.lat3(f3) + F.interpolate(p4, scale_factor=2.0, mode="nearest"))
        p2 = self.smooth2(self.lat2(f2) + F.interpolate(p3, scale_factor=2.0, mode="bilinear", align_corners=False))
        heads = [self.tower(p) for p in (p2, p3)]
        cls = torch.cat([self.cls(h).flatten(2) for h in heads], dim=2)  # (N, classes, 64 + 16)
        box = torch.cat([self.box(h).flatten(2) for h in heads], dim=2)  # (N, 4, 80)
        d = self.dec1(torch.cat([self.up1(p2), f1], dim=1))
        d = self.dec2(torch.cat([self.up2(d), x], dim=1))
        return cls, box, self.seg(d)


# ---------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------


def _finalize(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and LayerNorm affine parameters, eval mode."""
    _randomize_bn(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.1)
    return model.eval()


def _seeded(seed: int, ctor: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        return _finalize(ctor())

    build.__name__ = ctor.__name__
    return build


PATTERNS: dict[str, Callable[[], nn.Module]] = {
    "convnext": _seeded(201, ConvNeXt),
    "efficientnet": _seeded(202, EfficientNet),
    "inception": _seeded(203, Inception),
    "swin": _seeded(204, Swin),
    "detector": _seeded(205, Detector),
}

#: output names of each model (``logits`` unless listed)
OUTPUTS: dict[str, tuple[str, ...]] = {name: ("logits",) for name in PATTERNS} | {"detector": ("cls", "box", "seg")}
