"""Accuracy benchmark: test accuracy of small trained models after pruning, without fine-tuning.

Four small models are trained from code (torch, CPU) on jittered 32x32 digits
(:mod:`benchmarks.digits`): a ResNet-style CNN, a VGG-style CNN, a MobileNetV2-style CNN (all with
BatchNorm) and a small ViT. Each is exported with the TorchScript exporter (opset 17, no constant
folding, so BatchNorm stays a separate node) and evaluated in onnxruntime on the 450 test digits,
before and after ``spa.prune(model, ratio=r, criterion=c)`` for every ratio and criterion. There is
no fine-tuning: the figures show how much of the trained function each criterion keeps.

Trained models are cached as ``DIR/<model>.onnx`` plus ``DIR/<model>.json`` (training time and
settings) under ``--cache DIR`` (default: a temporary folder, removed afterwards); a rerun with the
same folder and unchanged training settings skips training.

A criterion is written ``NAME[:STATS][@N]``: ``l1``; ``obspa:synthetic`` passes ``stats="synthetic"``;
``obspa@128`` passes ``N`` = 128 images of :func:`benchmarks.digits.calibration_batch` (training
digits, never test digits) as ``calib={"input": images}`` (see :func:`prune_scoring`). A criterion,
ratio or model SPA rejects (any ``spa.SpaError``, e.g. an unknown criterion) is shown as n/a with
the reason under the table; any other exception is reported the same way unless ``--strict``.

With several seeds (``--seed 0,1,2``) every row is run once per seed and shows the mean and the
minimum; criteria that do not depend on the seed (:data:`SEED_FREE`) run once.

    python -m benchmarks.accuracy [--models resnet,vgg,mobilenet,vit]
        [--criteria random,l1,l2,bn-scale,obspa,obspa@128] [--ratios 0.2,0.4,0.6] [--seed 0,1,2]
        [--cache DIR] [--json FILE] [--summary FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

import spa
from benchmarks import digits
from spa.records import Scoring

log = logging.getLogger("benchmarks.accuracy")

MODEL_NAMES: tuple[str, ...] = ("resnet", "vgg", "mobilenet", "vit")
DEFAULT_CRITERIA: tuple[str, ...] = ("random", "l1", "l2", "bn-scale", "obspa", "obspa@128")
DEFAULT_RATIOS: tuple[float, ...] = (0.2, 0.4, 0.6)
#: Criteria whose result does not depend on ``seed`` (run once however many seeds are asked for).
SEED_FREE: frozenset[str] = frozenset({"l1", "l2", "bn-scale"})
#: Bump to retrain cached models after a change to the model code or the training loop.
MODEL_CODE_VERSION = 2


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1 conv-BN shortcut, Add, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout))
        self.shortcut = (
            nn.Sequential(*conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-style: 3x3 stem, three stages (16, 32, 64 channels) of two basic blocks each."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64), blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(digits.CHANNELS, widths[0]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if i > 0 and b == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, digits.NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VGG(nn.Module):
    """VGG-style: three stages (32, 64, 128 channels) of two 3x3 conv-BN-ReLU and a max-pool, then
    flatten and two Linear layers (the flatten couples each channel to 16 classifier columns)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), hidden: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = digits.CHANNELS
        for w in widths:
            layers += [*conv_bn(cin, w), nn.ReLU(inplace=True), *conv_bn(w, w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        side = digits.IMAGE_SIZE // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(0.2),
            nn.Linear(hidden, digits.NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual if shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            *conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True),
            *conv_bn(hidden, cout, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2-style: stem, inverted residual blocks (expansion 4), 1x1 head conv, pool, Linear."""

    # (expansion, out channels, blocks, first stride)
    SETTINGS: tuple[tuple[int, int, int, int], ...] = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1))

    def __init__(self, stem: int = 16, head: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [*conv_bn(digits.CHANNELS, stem), nn.ReLU6(inplace=True)]
        cin = stem
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [*conv_bn(cin, head, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(head, digits.NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class Attention(nn.Module):
    """Multi-head self-attention written out (fused qkv Linear, softmax(q k^T / sqrt(d)) v, projection)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Small ViT: 4x4 patch-embedding conv (64 tokens), class token, learned positions, 2 blocks."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, mlp: int = 128, patch: int = 4) -> None:
        super().__init__()
        tokens = (digits.IMAGE_SIZE // patch) ** 2
        self.patch_embed = nn.Conv2d(digits.CHANNELS, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, digits.NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, tokens, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@dataclass(frozen=True)
class TrainConfig:
    """How one model is built and trained (AdamW, one-cycle LR, label smoothing 0.1)."""

    epochs: int
    lr: float
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0


MODELS: dict[str, tuple[Callable[[], nn.Module], TrainConfig]] = {
    "resnet": (ResNet, TrainConfig(epochs=20, lr=3e-3)),
    "vgg": (VGG, TrainConfig(epochs=20, lr=2e-3)),
    "mobilenet": (MobileNetV2, TrainConfig(epochs=20, lr=4e-3)),
    "vit": (ViT, TrainConfig(epochs=80, lr=1e-3, weight_decay=0.05)),
}


# ---------------------------------------------------------------------------
# training and export
# ---------------------------------------------------------------------------


@dataclass
class TrainedModel:
    name: str
    path: Path
    train_seconds: float
    epochs: int
    torch_accuracy: float
    cached: bool
    config: dict[str, Any]


def _config_key(name: str, cfg: TrainConfig) -> str:
    text = json.dumps({"model": name, "cfg": asdict(cfg), "data": digits.DATA_VERSION,
                       "code": MODEL_CODE_VERSION, "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@torch.no_grad()
def torch_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = model(torch.from_numpy(np.array(x, dtype=np.float32))).argmax(1).numpy()
    return float((pred == y).mean())


def train(name: str, cfg: TrainConfig) -> tuple[nn.Module, float]:
    """Train model ``name`` from scratch; returns the model (eval mode) and the training seconds."""
    build, _ = MODELS[name]
    torch.manual_seed(cfg.seed)
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_train = len(digits.train_epoch(0, cfg.seed)[1])
    steps = cfg.epochs * math.ceil(n_train / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_test, y_test = digits.test_set()
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        x_np, y_np = digits.train_epoch(epoch, cfg.seed)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        order = torch.randperm(len(y), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        if epoch % 5 == 4 or epoch == cfg.epochs - 1:
            log.info("%s: epoch %d/%d loss %.3f test acc %.2f%% (%.0f s)", name, epoch + 1, cfg.epochs,
                     total / seen, 100 * torch_accuracy(model, x_test, y_test), time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    model.eval()
    return model, seconds


def export(model: nn.Module, path: Path) -> None:
    x = torch.zeros(1, digits.CHANNELS, digits.IMAGE_SIZE, digits.IMAGE_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17, do_constant_folding=False,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def trained_model(name: str, cache: Path, retrain: bool = False) -> TrainedModel:
    """``cache/<name>.onnx``, trained and exported unless a matching cached copy exists."""
    _, cfg = MODELS[name]
    key = _config_key(name, cfg)
    path, meta_path = cache / f"{name}.onnx", cache / f"{name}.json"
    if not retrain and path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            log.info("%s: reusing cached %s (trained in %.0f s)", name, path, meta["train_seconds"])
            return TrainedModel(name, path, meta["train_seconds"], cfg.epochs, meta["torch_accuracy"], True,
                                asdict(cfg))
        log.info("%s: cached model has other training settings; retraining", name)
    log.info("%s: training %d epochs on %d torch threads", name, cfg.epochs, torch.get_num_threads())
    model, seconds = train(name, cfg)
    acc = torch_accuracy(model, *digits.test_set())
    export(model, path)
    meta_path.write_text(json.dumps({"key": key, "train_seconds": seconds, "torch_accuracy": acc,
                                     "config": asdict(cfg)}, indent=1))
    log.info("%s: trained in %.0f s, test accuracy %.2f%%, exported to %s", name, seconds, 100 * acc, path)
    return TrainedModel(name, path, seconds, cfg.epochs, acc, False, asdict(cfg))


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def onnx_accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = [sess.run(None, {name: x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)]
    return float((np.concatenate(preds) == y).mean())


@dataclass(frozen=True)
class CriterionSpec:
    """A criterion row: ``NAME[:STATS][@N]`` — ``name`` for ``spa.prune``, optionally its ``stats``
    option and ``calibration``, the number of calibration images from :func:`digits.calibration_batch`."""

    name: str
    stats: str | None = None
    calibration: int | None = None

    @property
    def label(self) -> str:
        extra = [x for x in (self.stats, f"{self.calibration} calib." if self.calibration else None) if x]
        return f"{self.name} ({', '.join(extra)})" if extra else self.name

    @classmethod
    def parse(cls, text: str) -> CriterionSpec:
        rest, _, n = text.strip().partition("@")
        name, _, stats = rest.partition(":")
        if not name or (n and (not n.isdigit() or int(n) <= 0)) or (":" in rest and not stats):
            raise argparse.ArgumentTypeError(f"bad criterion {text!r}: expected NAME[:STATS][@N] (N > 0)")
        return cls(name, stats or None, int(n) if n else None)


def prune_scoring(spec: CriterionSpec, seed: int, input_name: str = "input") -> Scoring:
    """What ``spa.prune`` scores with: the one place that knows its data options.

    ``stats`` goes to ``Scoring.stats``; calibration images (float32 NCHW training digits) go to
    ``Scoring.calib={input_name: images}``.
    """
    calib = None
    if spec.calibration is not None:
        calib = {input_name: digits.calibration_batch(spec.calibration, seed=seed)}
    return Scoring(seed=seed, stats=spec.stats or "auto", calib=calib)


@dataclass
class Row:
    model: str
    criterion: str
    ratio: float
    accuracy: float | None = None  # mean over seeds
    relative: float | None = None
    accuracy_min: float | None = None
    accuracies: list[float] = field(default_factory=list)  # one per seed
    seeds: list[int] = field(default_factory=list)
    params_before: int = 0
    params_after: int | None = None
    macs_before: int = 0
    macs_after: int | None = None
    groups_total: int | None = None
    groups_prunable: int | None = None
    groups_pruned: int | None = None
    groups_blocked: int | None = None
    units_removed: int | None = None
    prune_seconds: float | None = None
    error: str | None = None


@dataclass
class ModelSummary:
    name: str
    train_seconds: float
    cached: bool
    epochs: int
    torch_accuracy: float
    onnx_accuracy: float
    params: int
    macs: int
    groups_total: int | None = None
    groups_prunable: int | None = None
    blocked: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def _run_one(row: Row, spec: CriterionSpec, seed: int, original: onnx.ModelProto, input_name: str,
             x: np.ndarray, y: np.ndarray, strict: bool) -> None:
    """Prune with one seed and add its accuracy to ``row`` (or set ``row.error``)."""
    t0 = time.perf_counter()
    try:
        result = spa.prune(original, ratio=row.ratio, criterion=spec.name,
                           scoring=prune_scoring(spec, seed, input_name))
    except spa.SpaError as exc:
        row.error = f"{type(exc).__name__}: {exc}"
        return
    except Exception as exc:  # an SPA bug: report it, keep the other rows
        if strict:
            raise
        log.debug("%s", traceback.format_exc())
        row.error = f"internal error {type(exc).__name__}: {exc}"
        return
    seconds = time.perf_counter() - t0
    n = len(row.accuracies)
    row.prune_seconds = seconds if row.prune_seconds is None else (row.prune_seconds * n + seconds) / (n + 1)
    rep = result.report
    row.params_before, row.params_after = rep.before.params, rep.after.params
    row.macs_before, row.macs_after = rep.before.macs, rep.after.macs
    row.groups_total, row.groups_prunable = rep.groups_total, rep.groups_prunable
    row.groups_pruned, row.groups_blocked = rep.groups_pruned, len(rep.blocked)
    row.units_removed = rep.units_removed
    row.accuracies.append(onnx_accuracy(result.model, x, y))
    row.seeds.append(seed)


def evaluate(tm: TrainedModel, specs: Sequence[CriterionSpec], ratios: Sequence[float], seeds: Sequence[int],
             strict: bool) -> tuple[ModelSummary, list[Row]]:
    x, y = digits.test_set()
    original = spa.load_model(tm.path)
    input_name = original.graph.input[0].name
    base_acc = onnx_accuracy(original, x, y)
    # the unpruned cost, as SPA measures it: ratio 0 removes nothing
    summary = ModelSummary(tm.name, tm.train_seconds, tm.cached, tm.epochs, tm.torch_accuracy, base_acc,
                           -1, -1, config=tm.config)
    try:
        rep = spa.prune(original, ratio=0.0, criterion="l1").report
    except spa.SpaError as exc:
        log.warning("%s: SPA cannot measure the model: %s", tm.name, exc)
    else:
        summary.params, summary.macs = rep.before.params, rep.before.macs
        summary.groups_total, summary.groups_prunable = rep.groups_total, rep.groups_prunable
        summary.blocked = [f"{b.name} ({b.units} units): {b.reason}" for b in rep.blocked]
    params, macs = summary.params, summary.macs
    log.info("%s: onnxruntime test accuracy %.2f%% (torch %.2f%%), %d params, %d MACs", tm.name,
             100 * base_acc, 100 * tm.torch_accuracy, params, macs)
    rows: list[Row] = []
    for spec in specs:
        for ratio in ratios:
            row = Row(tm.name, spec.label, ratio, params_before=params, macs_before=macs)
            for seed in (seeds[:1] if spec.name in SEED_FREE else seeds):
                _run_one(row, spec, seed, original, input_name, x, y, strict)
                if row.error:
                    break
            if not row.error and row.accuracies:
                row.accuracy = float(np.mean(row.accuracies))
                row.accuracy_min = float(np.min(row.accuracies))
                row.relative = row.accuracy / base_acc if base_acc > 0 else None
            if row.error:
                log.warning("%s %s ratio %.2f: n/a (%s)", tm.name, spec.label, ratio, row.error.splitlines()[0])
            else:
                log.info("%s %s ratio %.2f: accuracy %s (%d/%d groups pruned, %.2f s per run)", tm.name, spec.label,
                         ratio, " ".join(f"{100 * a:.2f}%" for a in row.accuracies), row.groups_pruned,
                         row.groups_prunable, row.prune_seconds)
            rows.append(row)
    return summary, rows


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------


def _si(n: float) -> str:
    if n < 0:
        return "?"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _change(before: int, after: int | None) -> str:
    if after is None:
        return f"{_si(before)}"
    pct = f" ({(after - before) / before * 100:+.0f}%)" if before > 0 else ""
    return f"{_si(before)}→{_si(after)}{pct}"


def _groups(s: ModelSummary) -> str:
    if s.groups_total is None:
        return "?"
    return f"{s.groups_total} found, {s.groups_prunable} prunable, {len(s.blocked)} blocked"


def markdown(summaries: Sequence[ModelSummary], rows: Sequence[Row]) -> str:
    lines = [
        f"SPA accuracy without fine-tuning: jittered 32x32 digits, {len(digits.test_set()[1])} test images; "
        f"python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__}",
        "",
        "| model | train s | epochs | accuracy (onnxruntime) | accuracy (torch) | params | MACs | SPA groups |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        cached = " (cached)" if s.cached else ""
        lines.append(f"| {s.name} | {s.train_seconds:.0f}{cached} | {s.epochs} | {100 * s.onnx_accuracy:.2f}% | "
                     f"{100 * s.torch_accuracy:.2f}% | {_si(s.params)} | {_si(s.macs)} | {_groups(s)} |")
    lines += ["", "| model | criterion | ratio | accuracy | % of original | params | MACs |",
              "|---|---|---|---|---|---|---|"]
    notes: dict[str, int] = {}
    for r in rows:
        if r.error is not None:
            mark = notes.setdefault(r.error, len(notes) + 1)
            acc, rel = f"n/a [{mark}]", "n/a"
        else:
            assert r.accuracy is not None
            acc = f"{100 * r.accuracy:.2f}%"
            if len(r.accuracies) > 1:
                acc += f" (min {100 * (r.accuracy_min or 0):.2f}%, {len(r.accuracies)} seeds)"
            rel = f"{100 * r.relative:.1f}%" if r.relative is not None else "-"
            if r.groups_pruned == 0:
                acc += " (nothing pruned)"
        lines.append(f"| {r.model} | {r.criterion} | {r.ratio:g} | {acc} | {rel} | "
                     f"{_change(r.params_before, r.params_after)} | {_change(r.macs_before, r.macs_after)} |")
    if notes:
        lines.append("")
        lines += [f"[{i}] {err.splitlines()[0]}" for err, i in notes.items()]
    return "\n".join(lines)


def pivot(summaries: Sequence[ModelSummary], rows: Sequence[Row]) -> str:
    """One line per model, one column per criterion; each cell is the accuracy in % at every
    ratio (``a / b / c``), the mean over seeds, with the minimum in brackets when there are
    several seeds."""
    labels = list(dict.fromkeys(r.criterion for r in rows))
    ratios = list(dict.fromkeys(r.ratio for r in rows))
    by = {(r.model, r.criterion, r.ratio): r for r in rows}

    def cell(model: str, label: str) -> str:
        means, mins, multi = [], [], False
        for q in ratios:
            r = by.get((model, label, q))
            if r is None or r.accuracy is None:
                means.append("n/a")
                mins.append("n/a")
                continue
            means.append(f"{100 * r.accuracy:.1f}")
            mins.append(f"{100 * (r.accuracy_min if r.accuracy_min is not None else r.accuracy):.1f}")
            multi = multi or len(r.accuracies) > 1
        return " / ".join(means) + (f" (min {' / '.join(mins)})" if multi else "")

    head = f"| model (original %) | {' | '.join(labels)} |"
    lines = [f"Test accuracy in % at ratio {' / '.join(f'{q:g}' for q in ratios)} (mean over seeds, "
             "min in brackets)", "", head, "|---" * (len(labels) + 1) + "|"]
    for sm in summaries:
        lines.append(f"| {sm.name} ({100 * sm.onnx_accuracy:.1f}) | "
                     f"{' | '.join(cell(sm.name, lab) for lab in labels)} |")
    return "\n".join(lines)


def to_json(summaries: Sequence[ModelSummary], rows: Sequence[Row]) -> dict[str, Any]:
    return {
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "onnxruntime": ort.__version__, "onnx": onnx.__version__, "spa": spa.__version__,
                        "data_version": digits.DATA_VERSION, "test_images": len(digits.test_set()[1])},
        "models": [asdict(s) for s in summaries],
        "rows": [asdict(r) for r in rows],
    }


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(t) for t in text.split(",") if t.strip()]
    return parse


def _model_name(text: str) -> str:
    if text.strip() not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from {', '.join(MODEL_NAMES)}")
    return text.strip()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=_csv(_model_name), default=list(MODEL_NAMES),
                   help=f"comma-separated (default {','.join(MODEL_NAMES)})")
    p.add_argument("--criteria", type=_csv(CriterionSpec.parse), default=None,
                   help=f"comma-separated NAME[:STATS][@CALIBRATION_IMAGES] (default {','.join(DEFAULT_CRITERIA)})")
    p.add_argument("--ratios", type=_csv(float), default=list(DEFAULT_RATIOS),
                   help="comma-separated (default 0.2,0.4,0.6)")
    p.add_argument("--cache", type=Path, help="folder to keep trained ONNX models in and reuse (default: temp dir)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--seed", type=_csv(int), default=[0],
                   help="comma-separated seeds for spa.prune and calibration (default 0); rows show mean and min")
    p.add_argument("--summary", type=Path, help="also write the model x criterion table (Markdown) here")
    p.add_argument("--retrain", action="store_true", help="train even if the cache has the model")
    p.add_argument("--strict", action="store_true", help="re-raise errors that are not spa.SpaError")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    if args.criteria is None:
        args.criteria = [CriterionSpec.parse(c) for c in DEFAULT_CRITERIA]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("spa",):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    tmp = None if args.cache else Path(tempfile.mkdtemp(prefix="spa-accuracy-"))
    cache: Path = args.cache or tmp
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summaries: list[ModelSummary] = []
    rows: list[Row] = []
    try:
        for name in args.models:
            tm = trained_model(name, cache, retrain=args.retrain)
            summary, model_rows = evaluate(tm, args.criteria, args.ratios, args.seed, args.strict)
            summaries.append(summary)
            rows += model_rows
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(summaries, rows))
    table = pivot(summaries, rows)
    print()
    print(table)
    if args.summary:
        args.summary.write_text(table + "\n")
        log.info("wrote %s", args.summary)
    if args.json:
        args.json.write_text(json.dumps(to_json(summaries, rows), indent=1))
        log.info("wrote %s", args.json)
    log.info("done in %.0f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    main()
