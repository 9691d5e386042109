"""Input sizes (spa.model.sizes): derived from the graph or stated with --shape, and used everywhere.

Each model here names the failure it exercises: a Reshape target that reads a downsampled width
(PP-OCRv4 recognition), a detector whose upsampled maps are concatenated with lateral ones
(YOLOv8's neck), a class token concatenated to a batch fixed at 1 (a ViT exported with batch 1),
and MACs of a model with dynamic H/W.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from modelkit import model, w
from onnx import helper

import spa
from spa.check.gates import measure_drift
from spa.errors import InvalidArgumentError, RewriteError
from spa.model.sizes import derive, resolve
from spa.records import Runtime
from spa.report.bench import bench_model
from spa.rewrite import check_valid


def _conv(x: str, y: str, cin: int, cout: int, inits: dict, stride: int = 1, k: int = 3) -> list[onnx.NodeProto]:
    inits[f"{y}.w"] = w(cout, cin, k, k)
    inits[f"{y}.b"] = w(cout)
    return [helper.make_node("Conv", [x, f"{y}.w", f"{y}.b"], [f"{y}.c"], name=y, strides=[stride, stride],
                             pads=[k // 2] * 4),
            helper.make_node("Relu", [f"{y}.c"], [y])]


def _recognizer() -> onnx.ModelProto:
    """PP-OCRv4 recognition in small: H and W dynamic, three stride-2 convs, then
    ``Reshape(Squeeze(t, 2), Concat([0], [C], Slice(Shape(t), 3, 4)))`` -> [N, C, W/8], which runs
    at H = 8 only (the squeezed H/8 must be 1). At SPA's old probe widths 2 and 3 the sliced width is 1 both times, so
    it looked static and was frozen to 1."""
    inits: dict = {"zero": np.array([0], np.int64), "c": np.array([6], np.int64),
                   "s3": np.array([3], np.int64), "s4": np.array([4], np.int64), "two": np.array([2], np.int64)}
    nodes = [*_conv("x", "a", 3, 8, inits, 2), *_conv("a", "b", 8, 8, inits, 2), *_conv("b", "t", 8, 6, inits, 2),
             helper.make_node("Shape", ["t"], ["st"]), helper.make_node("Slice", ["st", "s3", "s4"], ["wd"]),
             helper.make_node("Concat", ["zero", "c", "wd"], ["target"], axis=0),
             helper.make_node("Squeeze", ["t", "two"], ["sq"]), helper.make_node("Reshape", ["sq", "target"], ["y"])]
    return model(nodes, {"x": ["N", 3, "H", "W"]}, {"y": ["N", 6, "T"]}, inits)


def _detector() -> onnx.ModelProto:
    """A YOLOv8-style neck: stride-2 convs to P3 (stride 4) and P4 (stride 8), P4 upsampled x2 and
    concatenated with P3, a head conv on the result; N, H and W dynamic. Sizes 1 or 3 do not run."""
    inits: dict = {"scales": np.array([1, 1, 2, 2], np.float32)}
    nodes = [*_conv("x", "p2", 3, 8, inits, 2), *_conv("p2", "p3", 8, 16, inits, 2),
             *_conv("p3", "p4", 16, 16, inits, 2),
             helper.make_node("Resize", ["p4", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Concat", ["up", "p3"], ["cat"], axis=1),
             *_conv("cat", "f", 32, 16, inits, 1, 1)]
    inits["head.w"] = w(5, 16, 1, 1)
    nodes.append(helper.make_node("Conv", ["f", "head.w"], ["y"]))
    return model(nodes, {"x": ["N", 3, "H", "W"]}, {"y": ["N", 5, "h", "w"]}, inits)


def _run(m: onnx.ModelProto, shape: list[int]) -> np.ndarray:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)})[0]


def test_derived_sizes_follow_strides_pooling_and_resizing() -> None:
    rec = derive(_recognizer())
    assert rec.typical == {"x": [1, 3, 64, 64]} and rec.second == {"x": [2, 3, 72, 72]}  # multiples of 8
    checked = resolve(_recognizer())  # the model runs at H = 8 only: found, and H is checked there alone
    assert checked.sizes.typical == {"x": [1, 3, 8, 64]} and checked.sizes.second == {"x": [2, 3, 8, 72]}
    assert checked.fixed == ["input 'x' axis 2"] and len(checked.outputs) == 2
    det = derive(_detector())
    assert det.typical == {"x": [1, 3, 64, 64]} and det.second == {"x": [2, 3, 72, 72]}
    assert "input 'x' axis 2" in det.differing(det.second) and "derived" in det.summary()
    stated = derive(_detector(), {"x": [1, 3, 64, 96]})
    assert stated.typical == {"x": [1, 3, 64, 96]} and stated.second == {"x": [2, 3, 72, 104]} and stated.stated
    # paddle2onnx names every unknown axis "?": not one shared size (PP-OCR's classifier, H and W)
    m = model([helper.make_node("Conv", ["x", "k"], ["y"], strides=[4, 2])], {"x": ["N", 3, "?", "?"]},
              {"y": ["N", 2, "?", "?"]}, {"k": w(2, 3, 1, 1)})
    assert derive(m).typical == {"x": [1, 3, 64, 64]} and derive(m).second == {"x": [2, 3, 68, 66]}
    with pytest.raises(InvalidArgumentError, match="axis 1 is static"):
        derive(_detector(), {"x": [1, 4, 64, 64]})
    with pytest.raises(InvalidArgumentError, match="rank"):
        derive(_detector(), {"x": [1, 3, 64]})


def test_width_read_by_a_reshape_stays_dynamic_after_pruning() -> None:
    """PP-OCRv4 rec pruned with exit 0 and then failed at every real input (Reshape p2o.Reshape.79)."""
    m = _recognizer()
    pruned, plan, report = spa.prune(m, ratio=0.5, criterion="l1", verify_result=True)
    assert plan.slices and report.verification is not None and report.verification.passed
    for shape in ([1, 3, 8, 320], [6, 3, 8, 320], [1, 3, 8, 640]):
        assert _run(pruned, shape).shape == (shape[0], 6, shape[3] // 8)
    masked = spa.check.verify.mask_model(m, plan)
    np.testing.assert_allclose(_run(pruned, [2, 3, 8, 96]), _run(masked, [2, 3, 8, 96]), rtol=1e-4, atol=1e-4)


def test_a_model_that_runs_at_one_width_only_is_not_written() -> None:
    """The safety net: a Reshape target frozen to the typical width fails at the second size, and
    check_valid names the input, axis and size."""
    m = _recognizer()
    frozen = onnx.ModelProto()
    frozen.CopyFrom(m)
    for node in frozen.graph.node:
        if node.op_type == "Concat":
            node.input[2] = "w8"
    frozen.graph.initializer.append(onnx.numpy_helper.from_array(np.array([8], np.int64), "w8"))
    sizes = resolve(m)
    check_valid(m, m, sizes=sizes)
    with pytest.raises(RewriteError, match=r"at input 'x' axis 0 = 2, input 'x' axis 3 = 72 \(x:2x3x8x72\)"):
        check_valid(frozen, m, sizes=sizes)


def test_outputs_sized_by_values_are_compared_by_rank() -> None:
    """A detector with NonMaxSuppression-like outputs: the original's sizes come from zero weights,
    so only ranks can be compared; a model that runs is accepted."""
    m = model([helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("NonZero", ["m"], ["nz"]),
               helper.make_node("Cast", ["nz"], ["y"], to=onnx.TensorProto.FLOAT)],
              {"x": ["N", 2048]}, {"y": [2, "K"]}, {"s": np.ones(2048, np.float32)})
    sizes = resolve(m)
    assert sizes.value_dependent and sizes.outputs[0]["y"] == (2, 0)  # x * s with s zeroed: no non-zeros
    check_valid(m, m, sizes=sizes)


def test_dynamic_hw_detector_prunes_with_the_default_criterion() -> None:
    """Refused before as 'a bug in SPA' (Concat: Axis 2 has mismatched dimensions of 1 and 2)."""
    m = _detector()
    pruned, plan, report = spa.prune(m, ratio=0.25, criterion="obspa")
    assert plan.slices and report.sizes is not None and report.sizes["typical"] == {"x": [1, 3, 64, 64]}
    assert _run(pruned, [1, 3, 64, 96]).shape == (1, 5, 16, 24)
    assert _run(pruned, [3, 3, 320, 320]).shape == (3, 5, 80, 80)
    drift = measure_drift(m, pruned, shapes=report.sizes["typical"])  # --max-drift: random samples at 64 x 64
    assert np.isfinite(drift.value) and drift.samples == 8


def test_bench_times_a_dynamic_hw_model_at_its_derived_size() -> None:
    """spa bench used 1 for every dynamic size but the batch: a detector does not run at 1 x 1."""
    r = bench_model(_detector(), warmup=0, runs=1)
    assert r.input_shapes == {"x": [1, 3, 64, 64]} and r.runs == 1


def test_macs_are_counted_at_the_typical_size() -> None:
    """A conv on dynamic H/W counted 1 pixel (and more MACs after pruning, in PP-OCR's classifier)."""
    inits: dict = {}
    m = model(_conv("x", "a", 3, 8, inits) + _conv("a", "y", 8, 4, inits), {"x": ["N", 3, "H", "W"]},
              {"y": ["N", 4, "H", "W"]}, inits)
    _, _, report = spa.prune(m, ratio=0.5, criterion="l1", runtime=Runtime(shapes={"x": [1, 3, 16, 24]}))
    assert report.before.macs == 16 * 24 * (8 * 27 + 4 * 72)
    assert report.after.macs == 16 * 24 * (4 * 27 + 4 * 36)
    _, _, derived = spa.prune(m, ratio=0.5, criterion="l1")
    assert derived.before.macs == 64 * 64 * (8 * 27 + 4 * 72)  # smallest derived spatial size: 64
    assert "input sizes: x:1x3x64x64 (derived" in derived.table()


def _static_batch_vit() -> onnx.ModelProto:
    """A ViT's token path exported with batch 1: the class token [1, 1, 8] is concatenated to the
    patch tokens, so only batch 1 runs; an MLP follows."""
    inits = {"cls": w(1, 1, 8), "w1": w(8, 16), "w2": w(16, 8)}
    nodes = [helper.make_node("Concat", ["cls", "x"], ["t"], axis=1), helper.make_node("MatMul", ["t", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    return model(nodes, {"x": [1, 4, 8]}, {"y": [1, 5, 8]}, inits)


def test_calibration_data_is_fed_one_sample_at_a_time_to_a_static_batch(run_spa,
                                                                        tmp_path: Path) -> None:  # noqa: ANN001
    """Crashed with a traceback: batches of 32 fed to a graph fixed at batch 1 ('32 and 1')."""
    path, data = tmp_path / "vit.onnx", tmp_path / "calib.npz"
    onnx.save(_static_batch_vit(), path)
    np.savez(data, x=np.random.default_rng(0).standard_normal((40, 4, 8)).astype(np.float32))
    res = run_spa("prune", path, "--calib", data, "--ratio", "0.25", "-o", tmp_path / "out.onnx", "--no-config")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and (tmp_path / "out.onnx").exists()


def test_shape_on_the_command_line_and_in_spa_toml(run_spa, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "det.onnx"
    onnx.save(_detector(), path)
    res = run_spa("prune", path, "--criterion", "l1", "--ratio", "0.25", "--shape", "x:1x3x64x96", "--report",
                  tmp_path / "r.json", "--no-config")
    assert res.returncode == 0, res.stderr
    assert "input sizes: x:1x3x64x96 (stated; MACs at these sizes; also checked at x:2x3x72x104)" in res.stdout
    assert json.loads((tmp_path / "r.json").read_text())["sizes"]["typical"] == {"x": [1, 3, 64, 96]}
    (tmp_path / "spa.toml").write_text('criterion = "l1"\nratio = 0.25\nshape = ["x:1x3x64x96"]\n')
    res = run_spa("prune", path.name, "-o", "out.onnx", "--plan", "plan.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "input sizes: x:1x3x64x96 (stated" in res.stdout
    res = run_spa("groups", path, "--shape", "x:2x3x48x48")
    assert res.returncode == 0 and "input sizes: x:2x3x48x48 (stated" in res.stdout
    res = run_spa("verify", path, tmp_path / "out.onnx", "--plan", tmp_path / "plan.json", "--shape", "x:1x3x64x64")
    assert res.returncode == 0 and "input sizes: x:1x3x64x64; x:2x3x72x72" in res.stdout
    res = run_spa("sweep", path, "--ratios", "0.25", "--shape", "x:1x3x64x96", "--runs", "1", "--warmup", "0",
                  "--json", "-q")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["bench"]["input_shapes"] == {"x": [1, 3, 64, 96]}
    for bad, why in (("x:1x4x64x64", "axis 1 is static"), ("y:1x3x64x64", "not an input")):
        res = run_spa("prune", path, "--shape", bad, "--no-config")
        assert res.returncode == 1 and why in res.stderr and "Traceback" not in res.stderr
