"""The README's commands are run, so they cannot rot (``spa ...`` lines in process, through ``run_spa``)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
Run = Callable[..., Any]
BLOCKS = re.findall(r"```(bash|python|json)\n(.*?)```", README, flags=re.S)


def test_second_command_is_what_ci_runs() -> None:
    second = BLOCKS[1][1].strip()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert ci == second


def test_first_command_prunes_the_bundled_model(run_spa: Run, tmp_path: Path) -> None:
    first = BLOCKS[0][1].strip()
    install, _, run = first.partition(" && ")
    assert install == "pip install ." and run.startswith("spa prune models/zoo/")
    args = shlex.split(run)
    src = ROOT / args[2]
    (tmp_path / "models" / "zoo").mkdir(parents=True)
    shutil.copy(src, tmp_path / args[2])
    proc = run_spa(*args[1:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / args[2].replace(".onnx", ".pruned.onnx")
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert "params" in proc.stdout and "PASSED |" in proc.stdout


def test_cli_examples_run(run_spa: Run, tmp_path: Path) -> None:
    block = next(b for lang, b in BLOCKS if lang == "bash" and "spa groups model.onnx" in b)
    shutil.copy(ROOT / "models" / "zoo" / "resnet_basic.ts.onnx", tmp_path / "model.onnx")
    for line in block.strip().splitlines():
        cmd = line.split("#")[0].strip()
        if not cmd.startswith("spa ") :
            continue
        args = shlex.split(cmd)[1:]
        proc = run_spa(*args, cwd=tmp_path)
        assert proc.returncode == 0, (cmd, proc.stderr)
    assert json.loads((tmp_path / "plan.json").read_text())["format"] == "spa-plan/1"
    assert (tmp_path / "small.onnx").exists() and (tmp_path / "report.json").exists()


def test_python_api_example_runs(tmp_path: Path) -> None:
    code = next(b for lang, b in BLOCKS if lang == "python")
    shutil.copy(ROOT / "models" / "zoo" / "resnet_basic.ts.onnx", tmp_path / "model.onnx")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "small.onnx").exists() and (tmp_path / "plan.json").exists()


def test_plan_example_matches_real_plans(tmp_path: Path) -> None:
    example = next(b for lang, b in BLOCKS if lang == "json")
    keys = set(re.findall(r'"(\w+)":', example))
    import spa

    _, plan, _ = spa.prune(ROOT / "models" / "zoo" / "resnet_basic.ts.onnx", ratio=0.4)
    d = plan.to_dict()
    real = set(d) | set(d["slices"][0]) | set(d["groups"][0]) | set(d["options"])
    assert keys <= real, keys - real
