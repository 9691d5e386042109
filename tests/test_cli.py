"""Happy paths of the ``spa`` command line, run in process through ``run_spa`` (no mocks); the console
script and ``python -m spa`` run as processes of their own.

Exit codes: 0 ok, 1 user error, 2 usage, 3 verification failed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

MODEL = "resnet_basic.ts.onnx"
Run = Callable[..., Any]


def inits(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def n_params(path: Path) -> int:
    return sum(int(a.size) for a in inits(path).values())


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def feeds_for(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    out = {}
    for i in sess.get_inputs():
        assert i.type == "tensor(float)", i.type
        shape = [d if isinstance(d, int) and d > 0 else (2 if k == 0 else 1) for k, d in enumerate(i.shape)]
        out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def assert_ok(res: Any) -> None:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert "spa: error:" not in res.stderr


# ---- one full run, inspected by several tests ----------------------------------------------


@pytest.fixture(scope="module")
def full(run_spa: Run, tmp_path_factory: pytest.TempPathFactory, zoo: Path) -> dict[str, Any]:
    """``spa prune m.onnx -o small.onnx --plan plan.json --report report.json --criterion l2``."""
    d = tmp_path_factory.mktemp("full")
    shutil.copy(zoo / MODEL, d / "m.onnx")
    before = (d / "m.onnx").read_bytes()
    res = run_spa("prune", "m.onnx", "--ratio", "0.4", "-o", "small.onnx", "--plan", "plan.json",
                  "--report", "report.json", "--criterion", "l2", cwd=d)
    return {"dir": d, "res": res, "model": d / "m.onnx", "small": d / "small.onnx", "plan": d / "plan.json",
            "report": d / "report.json", "input_bytes": before}


def test_full_run_writes_model_plan_and_report(full: dict[str, Any]) -> None:
    res = full["res"]
    assert_ok(res)
    assert full["model"].read_bytes() == full["input_bytes"], "input was modified"
    for key in ("small", "plan", "report"):
        assert full[key].is_file(), key
    assert sorted(p.name for p in full["dir"].iterdir()) == ["m.onnx", "plan.json", "report.json", "small.onnx"]
    assert "wrote small.onnx" in res.stdout
    assert res.stdout.splitlines()[-1].startswith("PASSED |")

    onnx.checker.check_model(onnx.load(str(full["small"])), full_check=True)
    assert n_params(full["small"]) < n_params(full["model"])

    plan = json.loads(full["plan"].read_text())
    assert plan["format"] == "spa-plan/1"
    assert plan["criterion"] == "l2" and plan["ratio"] == pytest.approx(0.4)
    assert plan["slices"], "a 0.4 prune of a resnet must slice something"
    small = inits(full["small"])
    for s in plan["slices"]:  # the plan describes the written model
        assert small[s["initializer"]].shape[s["axis"]] == len(s["keep"]) < s["size"]

    report = json.loads(full["report"].read_text())
    assert report["before"]["params"] == n_params(full["model"])
    assert report["after"]["params"] == n_params(full["small"])
    assert report["after"]["params"] < report["before"]["params"]
    assert report["after"]["macs"] < report["before"]["macs"]
    assert report["criterion"] == "l2" and report["output"] == "small.onnx"
    assert report["nothing_to_prune"] is False


def test_plan_and_report_follow_umask(full: dict[str, Any]) -> None:
    # write_text_atomic used mkstemp, which creates 0600 files; the model got 0644 (fixed in spa/model/io.py).
    mask = os.umask(0)
    os.umask(mask)
    expected = 0o666 & ~mask
    for key in ("plan", "report", "small"):
        assert stat.S_IMODE(full[key].stat().st_mode) == expected, key


def test_verify_with_plan_passes(run_spa: Run, full: dict[str, Any]) -> None:
    res = run_spa("verify", "m.onnx", "small.onnx", "--plan", "plan.json", cwd=full["dir"])
    assert_ok(res)
    assert "verification (masked-equivalence) PASSED" in res.stdout
    assert res.stdout.splitlines()[-1].startswith("PASSED |")
    res = run_spa("verify", "m.onnx", "small.onnx", "--plan", "plan.json", "--json", cwd=full["dir"])
    assert_ok(res)
    v = json.loads(res.stdout.split("\nPASSED |")[0])
    assert v["passed"] is True and v["mode"] == "masked-equivalence" and v["outputs"]


def test_verify_tampered_model_exits_3(run_spa: Run, full: dict[str, Any], tmp_path: Path) -> None:
    m = onnx.load(str(full["small"]))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    weight = next(t for t in m.graph.initializer if t.name == conv.input[1])
    arr = numpy_helper.to_array(weight).copy()
    arr.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(arr, weight.name))
    onnx.save(m, str(tmp_path / "tampered.onnx"))
    res = run_spa("verify", full["model"], tmp_path / "tampered.onnx", "--plan", full["plan"], cwd=tmp_path)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert "MISMATCH" in res.stdout
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("spa: error:")]
    assert len(errors) == 1 and "FAILED" in errors[0]


def test_verify_without_plan_compares_directly(run_spa: Run, full: dict[str, Any]) -> None:
    res = run_spa("verify", "m.onnx", "m.onnx", cwd=full["dir"])  # a model equals itself
    assert_ok(res)
    assert "verification (direct) PASSED" in res.stdout
    res = run_spa("verify", "m.onnx", "small.onnx", cwd=full["dir"])  # pruned != unmasked original
    assert res.returncode == 3 and "Traceback" not in res.stderr


def test_replay_from_plan_reproduces_the_model(run_spa: Run, full: dict[str, Any], tmp_path: Path) -> None:
    shutil.copy(full["model"], tmp_path / "m.onnx")
    shutil.copy(full["plan"], tmp_path / "plan.json")
    plan_bytes = (tmp_path / "plan.json").read_bytes()
    res = run_spa("prune", "m.onnx", "--from-plan", "plan.json", "-o", "replay.onnx", cwd=tmp_path)
    assert_ok(res)
    assert (tmp_path / "plan.json").read_bytes() == plan_bytes
    first, replay = inits(full["small"]), inits(tmp_path / "replay.onnx")
    assert first.keys() == replay.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], replay[name], err_msg=name)


# ---- other commands and options ------------------------------------------------------------


def test_prune_default_output_beside_input(run_spa: Run, zoo: Path, tmp_path: Path) -> None:
    shutil.copy(zoo / MODEL, tmp_path / "M.onnx")
    before = (tmp_path / "M.onnx").read_bytes()
    res = run_spa("prune", "M.onnx", "--ratio", "0.4", "--criterion", "l1", cwd=tmp_path)  # l1: ms, obspa: seconds
    assert_ok(res)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M.onnx", "M.pruned.onnx"]
    assert (tmp_path / "M.onnx").read_bytes() == before
    out = res.stdout
    assert "params" in out and "MACs" in out and "before" in out and "after" in out
    assert "wrote M.pruned.onnx" in out
    assert out.splitlines()[-1].startswith("PASSED |")
    assert n_params(tmp_path / "M.pruned.onnx") < n_params(tmp_path / "M.onnx")


def test_prune_quiet_and_verify(run_spa: Run, zoo: Path, tmp_path: Path) -> None:
    shutil.copy(zoo / "vgg_bn.ts.onnx", tmp_path / "v.onnx")
    res = run_spa("prune", "v.onnx", "-q", "-o", "q.onnx", "--criterion", "l1", cwd=tmp_path)
    assert_ok(res)
    assert res.stdout == ""
    assert (tmp_path / "q.onnx").is_file()
    res = run_spa("prune", "v.onnx", "--verify", "-o", "checked.onnx", "--criterion", "l1", cwd=tmp_path)
    assert_ok(res)
    assert "verification (masked-equivalence) PASSED" in res.stdout  # obspa (the default) reports drift
    assert (tmp_path / "checked.onnx").is_file()
    # same options, same result: --verify does not change what is written
    assert inits(tmp_path / "q.onnx").keys() == inits(tmp_path / "checked.onnx").keys()


def test_ratio_zero_keeps_outputs(run_spa: Run, zoo: Path, tmp_path: Path) -> None:
    shutil.copy(zoo / MODEL, tmp_path / "m.onnx")
    res = run_spa("prune", "m.onnx", "--ratio", "0", "-o", "r0.onnx", cwd=tmp_path)
    assert_ok(res)
    assert n_params(tmp_path / "r0.onnx") == n_params(tmp_path / "m.onnx")
    feeds = feeds_for(tmp_path / "m.onnx")
    want, got = run_ort(tmp_path / "m.onnx", feeds), run_ort(tmp_path / "r0.onnx", feeds)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_groups_text_and_json(run_spa: Run, zoo: Path, tmp_path: Path) -> None:
    shutil.copy(zoo / MODEL, tmp_path / "m.onnx")
    res = run_spa("groups", "m.onnx", cwd=tmp_path)
    assert_ok(res)
    assert "prunable" in res.stdout and "blocked" in res.stdout
    blocked = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("blocked:")]
    assert blocked and any("model output 'logits'" in ln for ln in blocked), res.stdout

    res = run_spa("groups", "m.onnx", "--json", cwd=tmp_path)
    assert_ok(res)
    data = json.loads(res.stdout.split("\nPASSED |")[0])
    assert data["model"] == "m.onnx"
    statuses = {g["status"] for g in data["groups"]}
    assert "prunable" in statuses and "blocked" in statuses
    for g in data["groups"]:
        assert g["units"] >= 1 and g["members"]
        assert bool(g["reasons"]) == (g["status"] == "blocked")
    assert any("model output" in r for g in data["groups"] for r in g["reasons"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # groups writes nothing


def test_help_version_and_info(run_spa: Run, tmp_path: Path) -> None:
    res = run_spa("--help", cwd=tmp_path)
    assert_ok(res)
    for cmd in ("prune", "groups", "verify", "info"):
        assert cmd in res.stdout
    res = run_spa("prune", "--help", cwd=tmp_path)
    assert_ok(res)
    assert "--ratio" in res.stdout and "--from-plan" in res.stdout
    res = run_spa("--version", cwd=tmp_path)
    assert_ok(res)
    assert res.stdout.startswith("spa ")
    res = run_spa("info", cwd=tmp_path)
    assert_ok(res)
    assert "onnx" in res.stdout and "CPUExecutionProvider" in res.stdout
    assert "coupling rules for" in res.stdout and " Conv " in res.stdout
    assert res.stdout.splitlines()[-1].startswith("PASSED |")


def test_console_script(tmp_path: Path) -> None:
    exe = shutil.which("spa")
    if exe is None:
        pytest.skip("the `spa` console script is not on PATH")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("spa ")


def test_python_m_spa_in_a_process_of_its_own(run_spa_subprocess: Run, tmp_path: Path, zoo: Path) -> None:
    """``python -m spa`` as a process: exit status 0 and 1, reports on stdout and errors on stderr,
    and written files follow the process's umask (the in-process runs share pytest's)."""
    shutil.copy(zoo / MODEL, tmp_path / "m.onnx")
    before = os.umask(0o027)
    try:
        res = run_spa_subprocess("prune", "m.onnx", "--ratio", "0.3", "--criterion", "l1", "--plan", "plan.json",
                                 cwd=tmp_path)
    finally:
        os.umask(before)
    assert_ok(res)
    assert res.stdout.splitlines()[-1].startswith("PASSED |") and "PASSED" not in res.stderr
    for name in ("m.pruned.onnx", "plan.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
    res = run_spa_subprocess("prune", "missing.onnx", cwd=tmp_path)
    assert res.returncode == 1 and res.stdout == "", res
    assert res.stderr.startswith("spa: error: missing.onnx: no such file"), res.stderr
