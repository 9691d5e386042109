"""obspa through the CLI: --calib, --stats, compensated plans, replay, verify's drift mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import spa
from spa.errors import InvalidArgumentError
from spa.records import Scoring
from spa.scoring.calib import load_calibration

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


@pytest.fixture
def vgg(tmp_path: Path) -> Path:
    p = tmp_path / "vgg.onnx"
    shutil.copy(ZOO / "vgg_bn.ts.onnx", p)
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((24, 3, 32, 32)).astype("float32"))
    return p


def _inits(p: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(p)).graph.initializer}


def test_calibrated_obspa_plan_is_compensated_and_replays(run_spa, vgg: Path) -> None:
    d = vgg.parent
    code, out, err = run_spa("prune", vgg, "--criterion", "obspa", "--calib", d / "calib.npz", "--plan",
                             d / "plan.json",
                             "--verify", cwd=d)
    assert code == 0, err
    assert "drift" in out
    plan = json.loads((d / "plan.json").read_text())
    assert plan["compensated"] is True and plan["options"]["stats"] == "data"
    code, _, err = run_spa("prune", vgg, "--from-plan", d / "plan.json", "-o", d / "replay.onnx", cwd=d)
    assert code == 1 and "--calib" in err
    code, _, err = run_spa("prune", vgg, "--from-plan", d / "plan.json", "-o", d / "replay.onnx", "--calib",
                           d / "calib.npz", cwd=d)
    assert code == 0, err
    a, b = _inits(d / "vgg.pruned.onnx"), _inits(d / "replay.onnx")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    code, out, _ = run_spa("verify", vgg, d / "vgg.pruned.onnx", "--plan", d / "plan.json", cwd=d)
    assert code == 0 and "drift" in out


def test_data_free_obspa_differs_from_magnitude_and_changes_weights(vgg: Path) -> None:
    original = spa.load_model(vgg)
    _, plan_l2, _ = spa.prune(original, ratio=0.4, criterion="l2")
    pruned, plan, _ = spa.prune(original, ratio=0.4, criterion="obspa")
    assert plan.compensated and plan.options["stats"] == "synthetic"
    # Compensation changed a surviving consumer weight (the slices alone would copy it).
    sliced, _, _ = spa.prune(original, from_plan=spa.Plan.from_dict({**plan.to_dict(), "compensated": False}))
    a = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in sliced.graph.initializer}
    assert any(not np.array_equal(a[k], b[k]) for k in a if k in b)
    assert plan_l2.slices != plan.slices


@pytest.mark.parametrize("arrays,match", [
    ({"other": np.zeros((2, 3, 32, 32), np.float32), "more": np.zeros(2)}, "no array for model input"),
    ({"input": np.zeros((2, 3, 16, 16), np.float32)}, "expects"),
    ({"input": np.zeros((0, 3, 32, 32), np.float32)}, "non-zero length"),
])
def test_bad_calibration_files(tmp_path: Path, arrays: dict, match: str) -> None:
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(InvalidArgumentError, match=match):
        load_calibration(tmp_path / "c.npz", spa.load_model(ZOO / "vgg_bn.ts.onnx"))


def test_calibration_folder_of_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "input.npy", np.ones((4, 3, 32, 32), np.float32))
    got = load_calibration(tmp_path, spa.load_model(ZOO / "vgg_bn.ts.onnx"))
    assert got["input"].shape == (4, 3, 32, 32)


def test_stats_data_without_calib_is_a_user_error() -> None:
    with pytest.raises(InvalidArgumentError, match="--calib"):
        spa.prune(ZOO / "vgg_bn.ts.onnx", criterion="obspa", scoring=Scoring(stats="data"))


def test_report_says_how_each_consumer_was_compensated(run_spa, vgg: Path) -> None:
    d = vgg.parent
    code, out, err = run_spa("prune", vgg, "--criterion", "obspa", "--report", d / "r.json", cwd=d)
    assert code == 0, err
    c = json.loads((d / "r.json").read_text())["compensation"]
    per = c["per_consumer"]
    assert c["consumers"] == len(per) > 0
    assert c["refitted"] + c["bias_only"] + c["left_sliced"] == len(per)
    kinds = {v["kind"] for v in per.values()}
    assert kinds <= {"ridge", "bias", "none"}
    for v in per.values():  # chosen on held-out rows: never worse there than leaving the weights sliced
        assert v["held_out_error"] <= v["held_out_error_uncompensated"]
        assert (v["alpha"] is not None) == (v["kind"] == "ridge")
    assert c["held_out_error_ratio"] <= 1.0
    drift = c["held_out_output_drift"]
    assert set(drift) == {o.name for o in onnx.load(str(vgg)).graph.output}
    assert all(np.isfinite(v) and v >= 0 for v in drift.values())
    line = next(ln for ln in out.splitlines() if ln.startswith("compensation:"))
    assert f"{c['consumers']} consumers: {c['refitted']} refitted" in line and "left as sliced" in line
    assert "output drift on held-out synthetic samples" in line


def test_a_consumer_left_sliced_keeps_its_sliced_weights(vgg: Path) -> None:
    original = spa.load_model(vgg)
    pruned, plan, report = spa.prune(original, ratio=0.4, criterion="obspa")
    assert report.compensation is not None
    sliced, _, _ = spa.prune(original, from_plan=spa.Plan.from_dict({**plan.to_dict(), "compensated": False}))
    weight_of = {n.name: n.input[1] for n in spa.load_model(vgg).graph.node if n.op_type in ("Conv", "Gemm")}
    a = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in sliced.graph.initializer}
    for node, choice in report.compensation["per_consumer"].items():
        w = weight_of.get(node)
        if w is None or w not in a:
            continue
        assert np.array_equal(a[w], b[w]) == (choice["kind"] in ("none", "bias")), (node, choice)


def test_console_json_and_exit_code_agree_on_a_compensated_plan(run_spa, vgg: Path) -> None:
    # Drift of a compensated plan is reported, not judged: the console says REPORTED (never
    # PASSED), the JSON has no per-output verdict, and the exit code is 0.
    d = vgg.parent
    code, out, err = run_spa("prune", vgg, "--criterion", "obspa", "--verify", "--plan", d / "plan.json",
                             "--report", d / "r.json", cwd=d)
    assert code == 0, err
    assert "verification (drift) REPORTED" in out and "verification (drift) PASSED" not in out
    v = json.loads((d / "r.json").read_text())["verification"]
    assert v["mode"] == "drift" and v["passed"] is True and v["judged"] is False
    assert v["outputs"] and all(o["ok"] is None for o in v["outputs"])
    code, out, _ = run_spa("verify", vgg, d / "vgg.pruned.onnx", "--plan", d / "plan.json", cwd=d)
    assert code == 0 and "REPORTED" in out and "MISMATCH" not in out and " drift\n" in out + "\n"
    code, out, _ = run_spa("verify", vgg, d / "vgg.pruned.onnx", "--plan", d / "plan.json", "--json", cwd=d)
    j = json.loads(out)
    assert code == 0 and j["judged"] is False and all(o["ok"] is None for o in j["outputs"])
    # an uncompensated plan is judged: PASSED with every output ok
    code, out, err = run_spa("prune", vgg, "--criterion", "l1", "--verify", "-o", d / "l1.onnx", "--report",
                             d / "l1.json", cwd=d)
    assert code == 0 and "verification (masked-equivalence) PASSED" in out, err
    v = json.loads((d / "l1.json").read_text())["verification"]
    assert v["judged"] is True and v["passed"] is True and all(o["ok"] is True for o in v["outputs"])


def test_held_out_drift_uses_the_last_quarter_of_the_samples() -> None:
    from spa.criteria.obspa import held_out_drift

    feeds = [{"x": np.zeros((32, 1))} for _ in range(8)]  # 256 samples: the last quarter is batches 6 and 7
    outs = []
    for k in range(8):
        a = np.full((32, 2), 2.0, np.float32)
        b = a.copy()
        b[:, 0] += 100.0 if k < 6 else 0.5  # huge drift on the fitted samples, 0.5 on the held-out ones
        outs.append(({"y": a}, {"y": b}))
    assert held_out_drift(outs, feeds) == {"y": pytest.approx(0.25)}
    assert held_out_drift([({"i": np.ones(3, np.int64)}, {"i": np.zeros(3, np.int64)})], [{"x": np.zeros((1, 1))}]) == {}
