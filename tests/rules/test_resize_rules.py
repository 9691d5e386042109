"""Resize whose ``sizes`` are computed at run time: TorchScript's ``interpolate(x, size=...)``
builds them as ``Concat(Shape(x)[:2], size)``, so the channel entry is x's own size and a pruned
channel count reaches it by itself; any other run-time channel entry stays blocked."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from modelkit import conv, group_of, init_shape, model, prune_checked
from onnx import helper

import spa


def _upsampled(channel_source: str) -> onnx.ModelProto:
    """conv a (6 ch, 4x4) -> Resize to 8x8 with sizes Concat(Shape(src)[:2], [8, 8]) -> conv."""
    inits: dict = {"lo": np.array([0], np.int64), "hi": np.array([2], np.int64), "hw": np.array([8, 8], np.int64)}
    nodes = [conv("x", "a", 3, 6, inits=inits), helper.make_node("Relu", ["a"], ["r"]),
             conv("x", "b", 3, 6, inits=inits),  # another 6-channel tensor, not coupled with r
             helper.make_node("Shape", [channel_source], ["s"]),
             helper.make_node("Slice", ["s", "lo", "hi"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["r", "", "", "sizes"], ["u"], name="up", mode="nearest"),
             conv("u", "y", 6, 2, inits=inits), helper.make_node("Add", ["b", "b"], ["z"])]
    return model(nodes, {"x": ["N", 3, 4, 4]}, {"y": ["N", 2, 8, 8], "z": ["N", 6, 4, 4]}, inits)


def test_sizes_read_from_the_resized_tensor_prune() -> None:
    a = spa.analyze(_upsampled("r"))
    g = group_of(a, "a.w", 0)
    assert g.prunable and g is group_of(a, "y.w", 1)
    pruned, _, report = prune_checked(_upsampled("r"), 0.5)  # masked equivalence included
    assert report.groups_pruned == 1 and init_shape(pruned, "y.w") == [2, 3, 3, 3]


def test_channel_size_from_another_tensor_stays_blocked() -> None:
    g = group_of(spa.analyze(_upsampled("b")), "a.w", 0)  # the channel entry is b's, not r's
    assert not g.prunable and any("Resize 'up' sizes are computed at run time" in r for r in g.blocked)


def test_torchscript_interpolate_to_the_input_size(tmp_path) -> None:  # noqa: ANN001
    """DeepLabV3's ASPP pooling branch: pool, 1x1 conv, upsample back to the feature map's size."""
    torch = pytest.importorskip("torch")

    class Pooling(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 1)
            self.out = torch.nn.Conv2d(8, 2, 1)

        def forward(self, x):  # noqa: ANN001, ANN202
            size = x.shape[-2:]
            h = torch.relu(self.conv(torch.nn.functional.adaptive_avg_pool2d(x, 1)))
            return self.out(torch.nn.functional.interpolate(h, size=size, mode="bilinear", align_corners=False))

    torch.manual_seed(0)
    path = tmp_path / "pool.onnx"
    torch.onnx.export(Pooling().eval(), (torch.randn(1, 3, 5, 5),), str(path), dynamo=False, opset_version=17,
                      do_constant_folding=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    _, _, report = prune_checked(onnx.load(str(path)), 0.5)
    assert report.groups_pruned == 1 and [b.reason.split(" ")[:2] for b in report.blocked] == [["model", "output"]]
