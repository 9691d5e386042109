"""``spa bench``, ``spa prune --bench`` and :mod:`spa.report.bench`, with real onnxruntime runs (no mocks).

Timings are never compared with fixed values: only positive, finite and ordered (min <= median
<= p90). What is asserted exactly is what cannot depend on the machine: which models, shapes,
batch sizes, run counts, params, MACs and file sizes are reported.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from modelkit import conv, model
from onnx import helper

import spa
from spa.errors import InvalidArgumentError
from spa.report.bench import BenchResult, bench_model, file_size, parse_shape

MODEL = "resnet_bottleneck.ts.onnx"  # input 'input': batch x 3 x 32 x 32 (dynamic batch)
Run = Callable[..., Any]
FAST = ("--warmup", "1", "--runs", "5")


def ok(res: Any, document: bool = False) -> None:
    """Exit 0, no error, and the PASSED status line last: on stdout, or on stderr when stdout is a
    ``document`` (``--json``: stdout holds the JSON alone)."""
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "spa: error:" not in res.stderr
    status = res.stderr if document else res.stdout
    assert status.splitlines()[-1].startswith("PASSED |")


def user_error(res: Any, fragment: str, code: int = 1) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith(("spa: error:", "spa bench: usage error:"))]
    assert len(errors) == 1, res.stderr
    assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def bench_json(res: Any) -> dict[str, Any]:
    ok(res, document=True)
    return json.loads(res.stdout)


def table_rows(stdout: str) -> list[list[str]]:
    rows = [ln for ln in stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| model ")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def timings_sane(d: dict[str, Any]) -> None:
    for k in ("median_ms", "p90_ms", "min_ms", "mean_ms", "throughput"):
        assert math.isfinite(d[k]) and d[k] > 0, (k, d[k])
    assert d["min_ms"] <= d["median_ms"] <= d["p90_ms"]
    assert d["throughput"] == pytest.approx(d["batch"] * 1000.0 / d["median_ms"])


@pytest.fixture(scope="module")
def pair(run_spa: Run, tmp_path_factory: pytest.TempPathFactory, zoo: Path) -> dict[str, Any]:
    """MODEL, its 0.4 prune (with --bench and a report), in one folder."""
    d = tmp_path_factory.mktemp("bench")
    shutil.copy(zoo / MODEL, d / "m.onnx")
    # Exact ratio: the ideal speedup checked below assumes it. l1: the tests here are about timing, and
    # l1 prunes in milliseconds where obspa (the default, tested in test_obspa_cli) takes seconds.
    res = run_spa("prune", "m.onnx", "-o", "small.onnx", "--report", "report.json", "--bench", "--threads", "1",
                  "--round-to", "1", "--criterion", "l1", cwd=d)
    return {"dir": d, "res": res, "model": d / "m.onnx", "small": d / "small.onnx", "report": d / "report.json"}


# ---- spa bench -----------------------------------------------------------------------------


def test_bench_one_model_table(run_spa: Run, pair: dict[str, Any]) -> None:
    res = run_spa("bench", "m.onnx", *FAST, "--threads", "1", cwd=pair["dir"])
    ok(res)
    assert "1 intra-op threads" in res.stdout and "1 warm-up + 5 timed runs" in res.stdout
    rows = table_rows(res.stdout)
    assert len(rows) == 1
    assert rows[0][0] == "m.onnx" and rows[0][1] == "1x3x32x32" and rows[0][6] == "1.00x"


def test_bench_two_models_side_by_side(run_spa: Run, pair: dict[str, Any]) -> None:
    res = run_spa("bench", "m.onnx", "small.onnx", *FAST, cwd=pair["dir"])
    ok(res)
    assert "default intra-op threads" in res.stdout  # says what the default is
    rows = table_rows(res.stdout)
    assert [r[0] for r in rows] == ["m.onnx", "small.onnx"]
    assert rows[0][6] == "1.00x" and rows[0][7] == "1.00x"  # the baseline against itself
    assert rows[1][6].endswith("x") and float(rows[1][7][:-1]) > 1.5  # ideal (MACs) speedup of a 0.4 prune


def test_bench_json(run_spa: Run, pair: dict[str, Any]) -> None:
    d = bench_json(run_spa("bench", "m.onnx", "small.onnx", "--json", "--warmup", "2", "--runs", "7",
                           cwd=pair["dir"]))
    assert d["format"] == "spa-bench/1" and d["environment"]["onnxruntime"] == ort.__version__
    base, small = d["models"]
    for m, path in ((base, pair["model"]), (small, pair["small"])):
        timings_sane(m)
        assert m["runs"] == 7 and m["warmup"] == 2 and m["batch"] == 1 and m["threads"] == 0
        assert m["providers"] == ["CPUExecutionProvider"] and m["device"] == "cpu"
        assert m["input_shapes"] == {"input": [1, 3, 32, 32]}
        assert m["size_bytes"] == path.stat().st_size
        assert m["params"] == sum(t.size for t in map(onnx.numpy_helper.to_array, onnx.load(str(path)).graph.initializer)
                                  if t.dtype.kind == "f")
        assert m["peak_rss_growth_bytes"] is None or m["peak_rss_growth_bytes"] >= 0
    assert base["speedup"] == 1.0 and base["ideal_speedup"] == 1.0
    assert small["macs"] < base["macs"] and small["params"] < base["params"]
    assert small["ideal_speedup"] == pytest.approx(base["macs"] / small["macs"])
    assert small["speedup"] == pytest.approx(base["median_ms"] / small["median_ms"])
    report = json.loads(pair["report"].read_text())  # the same MACs as spa prune counts
    assert (base["macs"], small["macs"]) == (report["before"]["macs"], report["after"]["macs"])


def test_bench_json_quiet_is_pure_json(run_spa: Run, pair: dict[str, Any]) -> None:
    res = run_spa("bench", "m.onnx", *FAST, "--json", "-q", cwd=pair["dir"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["models"][0]["runs"] == 5


def test_shape_sets_dynamic_batch(run_spa: Run, pair: dict[str, Any]) -> None:
    d = bench_json(run_spa("bench", "m.onnx", *FAST, "--json", "--shape", "input:4x3x32x32", cwd=pair["dir"]))
    m = d["models"][0]
    assert m["batch"] == 4 and m["input_shapes"] == {"input": [4, 3, 32, 32]}
    timings_sane(m)  # throughput = 4 inferences / median latency
    d = bench_json(run_spa("bench", "m.onnx", *FAST, "--json", "--batch", "3", cwd=pair["dir"]))
    assert d["models"][0]["batch"] == 3 and d["models"][0]["input_shapes"] == {"input": [3, 3, 32, 32]}


def test_inputs_npz(run_spa: Run, pair: dict[str, Any], tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", input=np.zeros((2, 3, 32, 32), np.float64))  # cast to float32
    d = bench_json(run_spa("bench", pair["model"], *FAST, "--json", "--inputs", "data.npz", cwd=tmp_path))
    assert d["models"][0]["batch"] == 2 and d["models"][0]["input_shapes"] == {"input": [2, 3, 32, 32]}
    np.savez(tmp_path / "bad.npz", image=np.zeros((2, 3, 32, 32), np.float32), input=np.zeros((2, 3, 32, 32)))
    user_error(run_spa("bench", pair["model"], "--inputs", "bad.npz", cwd=tmp_path), "no input 'image'")
    np.savez(tmp_path / "small.npz", input=np.zeros((2, 3, 16, 16), np.float32))
    user_error(run_spa("bench", pair["model"], "--inputs", "small.npz", cwd=tmp_path), "has shape [2, 3, 16, 16]")


@pytest.mark.parametrize("shape", ["input", "input:4x3x32", "input:1x3x0x32", "input:ax3", ":1x3"])
def test_bad_shape_syntax_is_usage_error(run_spa: Run, pair: dict[str, Any], shape: str) -> None:
    res = run_spa("bench", "m.onnx", "--shape", shape, cwd=pair["dir"])
    if shape == "input:4x3x32":  # well-formed, but the wrong rank for this model
        user_error(res, "has rank 4")
    else:
        user_error(res, "--shape", code=2)


def test_bad_shape_values_are_user_errors(run_spa: Run, pair: dict[str, Any]) -> None:
    line = user_error(run_spa("bench", "m.onnx", "--shape", "image:1x3x32x32", cwd=pair["dir"]), "no input 'image'")
    assert "inputs: input" in line
    user_error(run_spa("bench", "m.onnx", "--shape", "input:1x4x32x32", cwd=pair["dir"]), "axis 1")
    user_error(run_spa("bench", "m.onnx", "--shape", "input:2x3x32x32", "--batch", "3", cwd=pair["dir"]),
               "--batch is 3")
    user_error(run_spa("bench", "m.onnx", "--runs", "0", cwd=pair["dir"]), "--runs must be >= 1")


def test_missing_model(run_spa: Run, pair: dict[str, Any]) -> None:
    line = user_error(run_spa("bench", "m.onnx", "nope.onnx", cwd=pair["dir"]), "no such file")
    assert "nope.onnx" in line


def test_cuda_without_cuda_is_user_error(run_spa: Run, pair: dict[str, Any]) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    user_error(run_spa("bench", "m.onnx", "--device", "cuda", cwd=pair["dir"]), "no CUDA provider")


def test_device_auto_runs_where_it_can(run_spa: Run, pair: dict[str, Any]) -> None:
    """--device auto measures on CUDA where onnxruntime really uses it, else on the CPU with a warning."""
    from spa.model.runtime import resolve_device

    code, out, err = run_spa("bench", "m.onnx", "--device", "auto", "--runs", "2", "--warmup", "0", "--json",
                             cwd=pair["dir"])
    assert code == 0, err
    first = json.loads(out)["models"][0]  # --json: stdout is the document alone
    expected = resolve_device("auto")
    assert first["device"] == expected
    if expected == "cpu":
        assert "--device auto:" in err and "running on the CPU" in err
        assert first["providers"] == ["CPUExecutionProvider"]
    else:
        assert "CUDAExecutionProvider" in first["providers"]


# ---- spa prune --bench ---------------------------------------------------------------------


def test_prune_bench_report(pair: dict[str, Any]) -> None:
    ok(pair["res"])
    out = pair["res"].stdout
    assert "latency (median of 20 runs" in out and "speedup: measured" in out and "ideal (MACs" in out
    r = json.loads(pair["report"].read_text())
    b = r["bench"]
    assert b["runs"] == 20 and b["warmup"] == 3 and b["threads"] == 1 and b["batch"] == 1
    assert b["providers"] == ["CPUExecutionProvider"] and b["input_shapes"] == {"input": [1, 3, 32, 32]}
    for side in ("before", "after"):
        assert math.isfinite(b[side]["median_ms"]) and b[side]["median_ms"] > 0
        assert b[side]["min_ms"] <= b[side]["median_ms"] <= b[side]["p90_ms"]
    assert b["measured_speedup"] == pytest.approx(b["before"]["median_ms"] / b["after"]["median_ms"])
    assert b["ideal_speedup"] == pytest.approx(r["before"]["macs"] / r["after"]["macs"])
    assert b["ideal_speedup"] > 1.5
    assert b["after"]["size_bytes"] < b["before"]["size_bytes"]
    assert r["seconds"]["bench"] > 0 and r["output"] == "small.onnx"


def test_prune_without_bench_has_no_bench(run_spa: Run, pair: dict[str, Any], tmp_path: Path) -> None:
    res = run_spa("prune", pair["model"], "-o", "s.onnx", "--report", "r.json", "-q", "--criterion", "l1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert "bench" not in r and "bench" not in r["seconds"]


# ---- library -------------------------------------------------------------------------------


def test_bench_model_api(pair: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from_path = bench_model(pair["model"], warmup=0, runs=3, threads=1)
    proto = onnx.load(str(pair["model"]))
    from_proto = bench_model(proto, warmup=1, runs=3, name="in-memory")
    assert capsys.readouterr().out == ""  # the library never prints
    assert isinstance(from_path, BenchResult) and from_path.runs == 3 and len(from_path.times_ms) == 3
    assert (from_proto.params, from_proto.macs) == (from_path.params, from_path.macs)
    assert from_proto.model == "in-memory" and from_path.model == str(pair["model"])
    assert onnx.load(str(pair["model"])) == proto  # the caller's model is not changed
    d = from_path.to_dict(times=True)
    assert d["times_ms"] == from_path.times_ms and json.loads(json.dumps(d))["runs"] == 3


def test_seconds_caps_the_runs(pair: dict[str, Any]) -> None:
    r = bench_model(pair["model"], warmup=0, runs=100_000, seconds=0.02)
    assert 1 <= r.runs < 100_000


def test_parse_shape() -> None:
    assert parse_shape("input:1x3x224x224") == ("input", [1, 3, 224, 224])
    assert parse_shape("a:b:2X3") == ("a:b", [2, 3])  # the last colon separates the sizes
    with pytest.raises(InvalidArgumentError):
        parse_shape("input:1x-3")


def test_macs_follow_dynamic_spatial_size(tmp_path: Path) -> None:
    inits: dict = {}
    m = model([conv("x", "y", 3, 8, k=3, inits=inits)], {"x": ["b", 3, "h", "w"]}, {"y": ["b", 8, "h", "w"]}, inits)
    small = bench_model(m, warmup=0, runs=1, shapes={"x": [1, 3, 8, 8]})
    big = bench_model(m, warmup=0, runs=1, shapes={"x": [2, 3, 16, 16]})
    assert small.macs == 8 * 8 * 8 * 27 and big.macs == 4 * small.macs  # per inference: batch is not counted
    assert big.batch == 2 and big.input_shapes == {"x": [2, 3, 16, 16]}


def test_external_data_counts_in_size(tmp_path: Path, zoo: Path) -> None:
    m = onnx.load(str(zoo / MODEL))
    params = sum(a.size for a in map(onnx.numpy_helper.to_array, m.graph.initializer) if a.dtype.kind == "f")
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    expected = (tmp_path / "ext.onnx").stat().st_size + (tmp_path / "ext.onnx.data").stat().st_size
    assert file_size(tmp_path / "ext.onnx") == expected > (tmp_path / "ext.onnx").stat().st_size
    r = bench_model(tmp_path / "ext.onnx", warmup=0, runs=2)
    assert r.size_bytes == expected
    assert r.params == params


def test_onnxruntime_failure_is_user_error(tmp_path: Path) -> None:
    # A Reshape to a fixed size: any other batch fails inside onnxruntime, reported as a SpaError.
    shape = onnx.numpy_helper.from_array(np.array([1, 12], np.int64), "shape")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "r",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 3, 4])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 12])], [shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    assert bench_model(m, warmup=0, runs=1).runs == 1
    with pytest.raises(spa.SpaError, match="onnxruntime cannot run the model"):
        bench_model(m, warmup=0, runs=1, batch=2)
