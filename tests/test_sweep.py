"""spa sweep: one prune per ratio, measured against the original; table, CSV, JSON and PNG."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import spa
from spa.check.gates import measure_drift
from spa.errors import InvalidArgumentError
from spa.model.runtime import make_session
from spa.pipeline.sweep import parse_ratios, sweep
from spa.records import Bench, Runtime, Scoring, Selection

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text,expected", [
    ("0.1:0.7:0.1", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]),
    ("0.2:0.5:0.2", [0.2, 0.4]),
    ("0.5,0.2,0.2", [0.2, 0.5]),
    ("0:0.4:0.2", [0.0, 0.2, 0.4]),
    ("0.3", [0.3]),
])
def test_parse_ratios(text: str, expected: list[float]) -> None:
    assert parse_ratios(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "a:b:c", "0.1:0.7:0", "0.7:0.1:0.1", "0.1:1.0:0.1", "-0.1,0.2", "0.2,1",
                                  "0:0.99:0.001", "nan"])
def test_parse_ratios_refuses(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_ratios(text)


@pytest.fixture(scope="module")
def calib() -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(3).standard_normal((12, 3, 32, 32)).astype(np.float32)}


def test_sweep_matches_prune_and_drift(calib: dict[str, np.ndarray]) -> None:
    model = ZOO / "resnet_bottleneck.ts.onnx"
    r = sweep(model, [0.5, 0.25], keep_models=True, selection=Selection(round_to=2), scoring=Scoring(calib=calib),
              bench=None)
    assert [p.ratio for p in r.points] == [0.0, 0.25, 0.5]
    original = spa.load_model(model)
    for p, m in zip(r.points[1:], r.models):
        _, _, report = spa.prune(model, p.ratio, selection=Selection(round_to=2))
        assert (p.params, p.macs, p.groups_pruned) == (report.after.params, report.after.macs, report.groups_pruned)
        assert p.ideal_speedup == pytest.approx(report.before.macs / report.after.macs)
        assert p.drift == pytest.approx(measure_drift(original, m, calib=calib).value, rel=1e-9)
        assert 0.0 <= p.agreement <= 1.0
    assert r.points[0].drift == 0.0 and r.points[0].agreement == 1.0
    assert r.points[0].params > r.points[1].params > r.points[2].params
    assert r.points[0].macs > r.points[1].macs > r.points[2].macs
    assert 0 < r.points[1].drift < r.points[2].drift
    assert all(p.median_ms is None for p in r.points)


def test_sweep_bench_and_eval(calib: dict[str, np.ndarray]) -> None:
    labels = np.arange(len(calib["input"])) % 10
    r = sweep(ZOO / "vgg_bn.dynamo.onnx", [0.3, 0.6], eval_data={**calib, "labels": labels},
              selection=Selection(exclude=["*classifier*"]), runtime=Runtime(threads=1), bench=Bench(warmup=1, runs=3))
    assert r.bench is not None and r.bench["runs"] == 3 and r.bench["threads"] == 1
    assert r.points[0].speedup == 1.0
    for p in r.points:
        assert p.median_ms is not None and p.median_ms > 0 and p.p90_ms >= p.median_ms
        assert p.accuracy is not None and 0.0 <= p.accuracy <= 1.0
    original = spa.load_model(ZOO / "vgg_bn.dynamo.onnx")
    logits = make_session(original).run(None, calib)[0]
    assert r.points[0].accuracy == pytest.approx(float(np.mean(logits.argmax(-1) == labels)))
    table = r.table()
    assert "| original |" in table and "speedup" in table and "accuracy" in table
    rows = list(csv.DictReader(io.StringIO(r.csv())))
    assert [float(x["ratio"]) for x in rows] == [0.0, 0.3, 0.6]
    assert int(rows[2]["params"]) == r.points[2].params


def test_sweep_refuses_nothing_to_sweep() -> None:
    with pytest.raises(InvalidArgumentError):
        sweep(ZOO / "vgg_bn.ts.onnx", [0.0], bench=None)
    with pytest.raises(InvalidArgumentError):
        sweep(ZOO / "vgg_bn.ts.onnx", [1.0], bench=None)


def test_cli_writes_every_output(run_spa, tmp_path: Path, calib: dict[str, np.ndarray]) -> None:
    pytest.importorskip("matplotlib")
    shutil.copy(ZOO / "resnet_basic.ts.onnx", tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", input=calib["input"])
    code, out, err = run_spa("sweep", "m.onnx", "--ratios", "0.2:0.6:0.2", "--runs", "2", "--warmup", "0",
                             "--threads", "1", "--calib", "calib.npz", "--csv", "s.csv", "--table", "s.md",
                             "--json-out", "s.json", "--plot", "s.png", cwd=tmp_path)
    assert code == 0, err
    assert "| original |" in out and "| 0.4 |" in out and "top-1 agreement" in out
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG_MAGIC
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["format"] == "spa-sweep/1" and [p["ratio"] for p in doc["points"]] == [0.0, 0.2, 0.4, 0.6]
    assert all(p["median_ms"] > 0 and p["drift"] is not None for p in doc["points"])
    assert (tmp_path / "s.md").read_text().startswith("| ratio |")
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 5
    assert not list(tmp_path.glob(".spa-*"))


def test_cli_json_without_bench(run_spa, tmp_path: Path) -> None:
    code, out, err = run_spa("sweep", ZOO / "se_block.ts.onnx", "--ratios", "0.5", "--no-bench", "--json",
                             "-q", "--criterion", "l2", "--global", cwd=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["criterion"] == "l2" and doc["options"]["global"] is True and doc["bench"] is None
    assert doc["points"][1]["params"] < doc["points"][0]["params"]


def test_cli_gradient_criterion_takes_labels(run_spa, tmp_path: Path, calib: dict[str, np.ndarray]) -> None:
    np.savez(tmp_path / "calib.npz", input=calib["input"], labels=np.arange(len(calib["input"])) % 10)
    args = ("sweep", ZOO / "vgg_bn.ts.onnx", "--ratios", "0.3,0.6", "--no-bench", "--json", "-q",
            "--criterion", "taylor", "--calib", "calib.npz", "--round-to", "1")
    code, out, err = run_spa(*args, cwd=tmp_path)
    assert code == 0, err
    points = json.loads(out)["points"]
    for p in points[1:]:
        scoring = Scoring(calib=calib, labels=np.arange(len(calib["input"])) % 10)
        _, _, report = spa.prune(ZOO / "vgg_bn.ts.onnx", p["ratio"], "taylor", scoring=scoring)
        assert (p["params"], p["macs"]) == (report.after.params, report.after.macs)
        assert p["drift"] > 0
    code, _, err = run_spa(*args, "--loss", "mse", cwd=tmp_path)
    assert code == 1 and "mse" in err and "Traceback" not in err


@pytest.mark.parametrize("extra,message", [
    (["--ratios", "0.1:0.9:0"], "step must be > 0"),
    (["--ratios", "0.5,1.5"], "in [0, 1)"),
    (["--plot", "s.jpg"], "ending in .png"),
    (["--plot", "missing/s.png"], "does not exist"),
    (["--csv", "m.onnx"], "equals the input"),
    (["--csv", "a.csv", "--table", "a.csv"], "name the same file"),
    (["--criterion", "nope"], "unknown criterion"),
    (["--runs", "0"], "--runs"),
    (["--calib", "nothing.npz"], "no such file"),
])
def test_cli_bad_input(run_spa, tmp_path: Path, extra: list[str], message: str) -> None:
    shutil.copy(ZOO / "resnet_basic.ts.onnx", tmp_path / "m.onnx")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_spa("sweep", "m.onnx", "--no-bench", "--ratios", "0.3", *extra, cwd=tmp_path)
    assert code == 1, (out, err)
    lines = [ln for ln in err.splitlines() if not ln.startswith("FAILED |")]
    assert len(lines) == 1 and lines[0].startswith("spa: error:") and message in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_missing_model(run_spa, tmp_path: Path) -> None:
    code, _, err = run_spa("sweep", tmp_path / "none.onnx", cwd=tmp_path)
    assert code == 1 and "no such file" in err and "Traceback" not in err


def test_cuda_without_a_cuda_runtime_is_one_line(run_spa, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    for cmd in (["sweep", ZOO / "vgg_bn.ts.onnx", "--ratios", "0.3", "--device", "cuda"],
                ["prune", ZOO / "vgg_bn.ts.onnx", "--target-speedup", "2", "--device", "cuda", "-o", "x.onnx"]):
        code, _, err = run_spa(*cmd, cwd=tmp_path)
        lines = [ln for ln in err.splitlines() if not ln.startswith("FAILED |")]
        assert code == 1 and len(lines) == 1 and "CUDA provider" in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "x.onnx").exists()
