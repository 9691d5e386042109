"""Machine-readable output is parseable as it stands: ``--json`` and outputs given as ``-`` put the
document alone on stdout (tables, "wrote ..." and the PASSED status line go to stderr), ``-`` never
becomes a file, and two documents cannot both claim stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

MODEL = "resnet_basic.ts.onnx"


@pytest.fixture
def model(zoo: Path) -> Path:
    return zoo / MODEL


def _document(res: Any) -> Any:
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # the whole of stdout, without -q
    assert "PASSED |" in res.stderr and "PASSED" not in res.stdout
    return doc


def test_groups_json_parses(run_spa: Any, model: Path) -> None:
    assert _document(run_spa("groups", model, "--json"))["groups"]


def test_prune_json_is_the_report(run_spa: Any, model: Path, tmp_path: Path) -> None:
    doc = _document(run_spa("prune", model, "--criterion", "l1", "-o", tmp_path / "p.onnx", "--json", cwd=tmp_path))
    assert doc["output"] == str(tmp_path / "p.onnx") and doc["after"]["params"] < doc["before"]["params"]
    assert (tmp_path / "p.onnx").is_file()


def test_verify_and_bench_json_parse(run_spa: Any, model: Path, tmp_path: Path) -> None:
    out, plan = tmp_path / "p.onnx", tmp_path / "plan.json"
    assert run_spa("prune", model, "--criterion", "l1", "-o", out, "--plan", plan).returncode == 0
    assert _document(run_spa("verify", model, out, "--plan", plan, "--json"))["passed"] is True
    assert len(_document(run_spa("bench", model, out, "--runs", "2", "--warmup", "0", "--json"))["models"]) == 2


@pytest.mark.parametrize("flag", ["--report", "--plan"])
def test_dash_means_stdout(run_spa: Any, model: Path, tmp_path: Path, flag: str) -> None:
    res = run_spa("prune", model, "--criterion", "l1", "-o", "p.onnx", flag, "-", cwd=tmp_path)
    doc = _document(res)
    assert ("format" in doc) == (flag == "--plan")
    assert not (tmp_path / "-").exists() and (tmp_path / "p.onnx").is_file()


def test_markdown_to_stdout(run_spa: Any, model: Path, tmp_path: Path) -> None:
    res = run_spa("prune", model, "--criterion", "l1", "-o", "p.onnx", "--markdown", "-", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("### SPA pruning report") and "PASSED |" in res.stderr
    assert not (tmp_path / "-").exists()


def test_two_documents_cannot_share_stdout(run_spa: Any, model: Path, tmp_path: Path) -> None:
    res = run_spa("prune", model, "--criterion", "l1", "-o", "p.onnx", "--report", "-", "--plan", "-", cwd=tmp_path)
    assert res.returncode == 1 and "standard output" in res.stderr
    assert list(tmp_path.iterdir()) == []
