"""The fine-tuning example and the README commands of the gradient criteria and fine-tuning sections.

``examples/finetune/finetune.py`` runs as the README says (with shorter training): fine-tuning must
recover the accuracy pruning lost, and the sliced torch model must re-export to an ONNX model whose
initializers equal SPA's pruned model, name for name.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SHORT = ["--epochs", "3", "--finetune-epochs", "2"]  # about 3 s of training on one core


def section(title: str) -> str:
    return README.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def commands(text: str, prefix: str) -> list[str]:
    (block,) = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert all(line.startswith(prefix) for line in lines), lines
    return lines


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("index", [0, 1])
def test_readme_finetune_commands(index: int, tmp_path: Path) -> None:
    line = commands(section("## Fine-tuning after pruning"), "python examples/finetune/finetune.py")[index]
    out, figures = tmp_path / "out", tmp_path / "figures.json"
    args = shlex.split(line)[1:]
    proc = run([sys.executable, *args, *SHORT, "--out", str(out), "--json", str(figures)], cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "after fine-tuning" in proc.stdout and "$ spa prune" in proc.stdout
    r = json.loads(figures.read_text())
    assert r["before"] > 0.9
    assert r["finetuned"] > r["pruned"] + 0.1 and r["finetuned"] > 0.9, r  # accuracy recovers
    assert r["params_after"] < 0.6 * r["params_before"]
    # The sliced torch model, exported again, is SPA's pruned model: same initializers, same values.
    want, got = initializers(out / "small.onnx"), initializers(out / "small.reexported.onnx")
    assert want.keys() == got.keys()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert r["reexport_equal"] and r["torch_vs_onnx_max_abs"] < 1e-4
    onnx.checker.check_model(onnx.load(str(out / "small.finetuned.onnx")), full_check=True)


def test_readme_gradient_criteria_commands(run_spa: Callable[..., Any], tmp_path: Path) -> None:
    shutil.copy(ROOT / "models" / "zoo" / "resnet_basic.ts.onnx", tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "data.npz", input=x, labels=rng.integers(0, 10, 8))
    np.savez(tmp_path / "targets.npz", input=x, targets=rng.standard_normal((8, 10)).astype(np.float32))
    for line in commands(section("### Gradient criteria: taylor, snip, grasp, crop"), "spa prune model.onnx"):
        res = run_spa(*shlex.split(line)[1:], "-q", cwd=tmp_path)  # in process: no interpreter and torch start-up
        assert res.returncode == 0, (line, res.stderr)
        onnx.checker.check_model(onnx.load(str(tmp_path / "model.pruned.onnx")), full_check=True)
        (tmp_path / "model.pruned.onnx").unlink()


def test_compare_criteria_runs(tmp_path: Path) -> None:
    proc = run([sys.executable, str(ROOT / "examples" / "finetune" / "compare_criteria.py"), "--epochs", "1",
                "--criteria", "taylor,random", "--random-seeds", "2", "--finetune-epochs", "1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\| (\w+).*? \| ([\d.]+)% \| ([\d.]+)% \|", proc.stdout, flags=re.M)
    assert [r[0] for r in rows] == ["taylor", "random"], proc.stdout
    assert all(0 <= float(a) <= 100 and float(b) > 50 for _, a, b in rows), rows
