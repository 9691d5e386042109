"""SPA in CI: gates (exit 4, nothing written), settings files, --markdown, and the example
GitHub Actions workflow and pre-commit hook, all through the real CLI (subprocesses, no mocks)."""

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
import onnxruntime as ort
import pytest

from spa.check.gates import parse_count, parse_fraction

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MODEL = "resnet_basic.ts.onnx"  # after a 0.4 l1 prune: 17,480 params, 7,239,880 MACs
Run = Callable[..., Any]


# ---- helpers -------------------------------------------------------------------------------


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path: Path, zoo: Path) -> Path:
    """A folder holding ``m.onnx`` (a copy of the zoo ResNet) and nothing else."""
    shutil.copy(zoo / MODEL, tmp_path / "m.onnx")
    return tmp_path


def ok(res: Any) -> None:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr


def gate_failed(res: Any, folder: Path, before: dict[str, tuple[int, int]], *phrases: str) -> str:
    """Exit 4, one ``spa: gate failed: ...`` line, no traceback, the folder exactly as before."""
    assert res.returncode == 4, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("spa: ")]
    assert len(lines) == 1 and lines[0].startswith("spa: gate failed: "), res.stderr
    assert lines[0].endswith("nothing was written"), lines[0]
    assert not [ln for ln in res.stderr.splitlines() if ln and not ln.startswith(("spa: ", "FAILED |"))], res.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    assert listing(folder) == before, "a file was written or changed"
    return lines[0]


def report(folder: Path, name: str = "r.json") -> dict[str, Any]:
    return json.loads((folder / name).read_text())


def gates_of(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in rep["gates"]}


OUTS = ("-o", "out.onnx", "--plan", "p.json", "--report", "r.json", "--markdown", "r.md")
#: Exact ratios (the command line rounds to multiples of 8 by default) and l1 (obspa, the default,
#: adds biases to the compensated convs): the counts below assume them.
EXACT = ("--round-to", "1", "--criterion", "l1")
#: For the tests about gates, reports and settings files rather than the criterion: l1 prunes the
#: zoo resnet in a fraction of a second, obspa (the default, covered by test_obspa_cli) in seconds.
FAST = ("--criterion", "l1")


# ---- counts --------------------------------------------------------------------------------


def test_parse_count_suffixes() -> None:
    assert parse_count("2.5M") == 2_500_000
    assert parse_count("300k") == 300_000
    assert parse_count("300K") == 300_000
    assert parse_count("1.2G") == 1_200_000_000
    assert parse_count("2T") == 2 * 10**12
    assert parse_count("12345") == 12345
    assert parse_count("1_000_000") == 1_000_000
    assert parse_count("1e6") == 1_000_000
    assert parse_count(40000) == 40000 and parse_count(2.5e6) == 2_500_000
    for bad in ("abc", "-5", "1.5X", "", "M", "1.2.3M", True):
        with pytest.raises(ValueError):
            parse_count(bad)  # type: ignore[arg-type]
    assert parse_fraction("92%") == pytest.approx(0.92) and parse_fraction("0.9") == 0.9


def test_size_suffixes_on_the_command_line(run_spa: Run, work: Path) -> None:
    res = run_spa("prune", "m.onnx", "--max-params", "40k", "--max-macs", "0.0073G", "--report", "r.json",
                  "-o", "out.onnx", *EXACT, cwd=work)
    ok(res)
    g = gates_of(report(work))
    assert g["max-params"] == {"name": "max-params", "value": 17480, "limit": 40000, "op": "<=", "passed": True}
    assert g["max-macs"] == {"name": "max-macs", "value": 7_239_880, "limit": 7_300_000, "op": "<=", "passed": True}
    assert "gates:" in res.stdout and "max-params" in res.stdout


def test_bad_count_is_a_usage_error(run_spa: Run, work: Path) -> None:
    before = listing(work)
    res = run_spa("prune", "m.onnx", "--max-params", "12Q", cwd=work)
    assert res.returncode == 2 and "not a count: '12Q'" in res.stderr and "Traceback" not in res.stderr
    assert listing(work) == before


# ---- each gate passing and failing ---------------------------------------------------------


def test_max_params_and_max_macs_pass(run_spa: Run, work: Path) -> None:
    res = run_spa("prune", "m.onnx", "--max-params", "17480", "--max-macs", "7.3M", *OUTS, *EXACT, cwd=work)
    ok(res)
    g = gates_of(report(work))
    assert g["max-params"]["passed"] and g["max-macs"]["passed"] and report(work)["gates_passed"] is True
    assert {"out.onnx", "p.json", "r.json", "r.md"} <= set(listing(work))


def test_max_params_fails_and_writes_nothing(run_spa: Run, work: Path) -> None:
    before = listing(work)
    res = run_spa("prune", "m.onnx", "--max-params", "10k", *OUTS, *EXACT, cwd=work)
    gate_failed(res, work, before, "max-params: 17,480 > 10,000")
    assert "FAIL" in res.stdout  # the console table still shows the gates


def test_max_macs_fails_and_writes_nothing(run_spa: Run, work: Path) -> None:
    before = listing(work)
    res = run_spa("prune", "m.onnx", "--max-macs", "7.2M", "--max-params", "1M", *OUTS, *EXACT, cwd=work)
    line = gate_failed(res, work, before, "max-macs: 7,239,880 > 7,200,000")
    assert "max-params" not in line  # only failed gates are in the reason


def test_min_speedup(run_spa: Run, work: Path) -> None:
    res = run_spa("prune", "m.onnx", "--min-speedup", "0.01", "--report", "r.json", "-o", "out.onnx", *FAST, cwd=work)
    ok(res)
    rep = report(work)
    assert rep["bench"]["measured_speedup"] > 0.01  # --min-speedup implies --bench
    assert gates_of(rep)["min-speedup"]["value"] == rep["bench"]["measured_speedup"]
    assert "speedup: measured" in res.stdout
    (work / "out.onnx").unlink()
    (work / "r.json").unlink()
    before = listing(work)
    res = run_spa("prune", "m.onnx", "--min-speedup", "1000", *OUTS, *FAST, cwd=work)
    gate_failed(res, work, before, "min-speedup:", "< 1000.00x")


def test_max_drift_after_l1_prune(run_spa: Run, work: Path) -> None:
    before = listing(work)
    res = run_spa("prune", "m.onnx", "--ratio", "0.4", "--criterion", "l1", "--max-drift", "0.05", *OUTS, cwd=work)
    gate_failed(res, work, before, "max-drift: ")
    drift = float(re.search(r"max-drift: ([0-9.e-]+) > 0.05", res.stderr)[1])  # type: ignore[index]
    assert drift > 0.05
    res = run_spa("prune", "m.onnx", "--ratio", "0.4", "--criterion", "l1", "--max-drift", "10", "--report", "r.json",
                  "-o", "o.onnx", cwd=work)
    ok(res)
    d = report(work)["drift"]
    assert d["value"] == pytest.approx(drift, rel=1e-3) and d["value"] > 0  # channels removed: outputs move
    assert d["data"] == "random" and d["samples"] == 8 and d["outputs"][0]["name"] == "logits"
    assert d["value"] == max(o["rel"] for o in d["outputs"])


def test_max_drift_zero_after_ratio_zero(run_spa: Run, work: Path) -> None:
    res = run_spa("prune", "m.onnx", "--ratio", "0", "--max-drift", "0", "--report", "r.json", "-o", "o.onnx",
                  cwd=work)
    ok(res)
    rep = report(work)
    assert rep["drift"]["value"] == 0.0 and gates_of(rep)["max-drift"]["passed"] is True


def test_max_drift_on_calibration_data(run_spa: Run, work: Path) -> None:
    x = np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.savez(work / "calib.npz", input=x)
    res = run_spa("prune", "m.onnx", "--calib", "calib.npz", "--max-drift", "10", "--report", "r.json",
                  "-o", "o.onnx", cwd=work)
    ok(res)
    d = report(work)["drift"]
    assert d["data"] == "calib.npz" and d["samples"] == 5 and d["value"] > 0


@pytest.fixture
def labelled(work: Path) -> Path:
    """``eval.npz``: 40 random inputs labelled with the original model's own top-1 (accuracy 1.0)."""
    x = np.random.default_rng(1).standard_normal((40, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(work / "m.onnx"), providers=["CPUExecutionProvider"])
    np.savez(work / "eval.npz", input=x, labels=sess.run(None, {"input": x})[0].argmax(-1))
    return work / "eval.npz"


def test_min_accuracy(run_spa: Run, work: Path, labelled: Path) -> None:
    res = run_spa("prune", "m.onnx", "--ratio", "0", "--eval", "eval.npz", "--min-accuracy", "100%",
                  "--report", "r.json", "-o", "o.onnx", cwd=work)
    ok(res)
    rep = report(work)
    assert rep["accuracy"] == {"data": "eval.npz", "samples": 40, "before": 1.0, "after": 1.0}
    assert gates_of(rep)["min-accuracy"] == {"name": "min-accuracy", "value": 1.0, "limit": 1.0, "op": ">=",
                                             "passed": True}
    for f in ("o.onnx", "r.json"):
        (work / f).unlink()
    before = listing(work)
    res = run_spa("prune", "m.onnx", "--ratio", "0.4", "--eval", "eval.npz", "--min-accuracy", "0.99", *OUTS,
                  *EXACT, cwd=work)
    gate_failed(res, work, before, "min-accuracy: ", "< 99.00%")


def test_accuracy_options_are_checked(run_spa: Run, work: Path) -> None:
    before = listing(work)
    res = run_spa("prune", "m.onnx", "--min-accuracy", "0.9", cwd=work)
    assert res.returncode == 1 and "--min-accuracy needs labelled data: --eval" in res.stderr
    assert listing(work) == before
    np.savez(work / "nolabels.npz", input=np.zeros((2, 3, 32, 32), np.float32))
    before = listing(work)
    res = run_spa("prune", "m.onnx", "--eval", "nolabels.npz", cwd=work)
    assert res.returncode == 1 and "no 'labels' array" in res.stderr and "Traceback" not in res.stderr
    assert listing(work) == before


def test_reports_on_fail_and_dry_run(run_spa: Run, work: Path) -> None:
    res = run_spa("prune", "m.onnx", "--max-params", "1k", "--reports-on-fail", *OUTS, *FAST, cwd=work)
    assert res.returncode == 4 and "only r.json and r.md written" in res.stderr
    assert sorted(listing(work)) == ["m.onnx", "r.json", "r.md"]  # never the model or the plan
    rep = report(work)
    assert rep["gates_passed"] is False and rep["output"] is None
    md = (work / "r.md").read_text()
    assert "❌ SPA: gate failed" in md and "❌ **FAIL**" in md and "no model written" in md
    res = run_spa("prune", "m.onnx", "--dry-run", "--max-params", "1M", "--report", "d.json", *FAST, cwd=work)
    ok(res)
    assert "dry run: no model written" in res.stdout and report(work, "d.json")["output"] is None
    assert "m.pruned.onnx" not in listing(work)


# ---- --markdown ----------------------------------------------------------------------------


def test_markdown_summary(run_spa: Run, work: Path) -> None:
    res = run_spa("prune", "m.onnx", "--ratio", "0.4", "--max-params", "40k", "--max-drift", "10",
                  "--min-speedup", "0.01", "-o", "small.onnx", "--markdown", "pr.md", *EXACT, cwd=work)
    ok(res)
    md = (work / "pr.md").read_text()
    assert md.startswith("### ✅ SPA: all 3 gates passed for `m.onnx`")
    assert "| | before | after | change |" in md
    assert "| params | 43.71k | 17.48k | -60.0% |" in md
    assert "| MACs | 18.27M | 7.24M | -60.4% |" in md
    assert "| size |" in md and "| latency (median) |" in md
    assert "| `max-params` | 17.48k | ≤ 40.00k | ✅ pass |" in md
    assert "| `max-drift` |" in md and "| `min-speedup` |" in md
    assert "Output drift against the original: **" in md
    assert "<summary>Pruned groups (6)</summary>" in md and "<summary>Blocked groups (1)</summary>" in md
    assert "model output 'logits'" in md
    assert "spa prune m.onnx --ratio 0.4 --max-params 40k" in md  # the command line
    assert "output `small.onnx`" in md


# ---- settings files ------------------------------------------------------------------------


def test_config_from_pyproject(run_spa: Run, work: Path) -> None:
    (work / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.spa]\nratio = 0.2\ncriterion = "l2"\n'
                                         'max-drift = 10\nreport = "r.json"\n')
    res = run_spa("prune", "m.onnx", "-o", "o.onnx", cwd=work)
    ok(res)
    assert "settings from pyproject.toml" in res.stdout
    rep = report(work)
    assert rep["ratio"] == 0.2 and rep["criterion"] == "l2" and rep["config"] == "pyproject.toml"
    assert "max-drift" in gates_of(rep)
    res = run_spa("prune", "m.onnx", "-o", "o.onnx", "--ratio", "0.3", "--criterion", "l1", cwd=work)
    ok(res)  # command-line flags override the file
    rep = report(work)
    assert rep["ratio"] == 0.3 and rep["criterion"] == "l1" and "max-drift" in gates_of(rep)


def test_config_from_spa_toml_with_override(run_spa: Run, work: Path) -> None:
    (work / "pyproject.toml").write_text("[tool.spa]\nratio = 0.3\n")  # spa.toml wins in the same folder
    (work / "spa.toml").write_text('ratio = 0.4\nexclude = ["fc*"]\nmax_params = "10k"\nmarkdown = "pr.md"\n')
    before = listing(work)
    res = run_spa("prune", "m.onnx", "-o", "o.onnx", *FAST, cwd=work)
    gate_failed(res, work, before, "max-params: ")  # the gate comes from the file
    res = run_spa("prune", "m.onnx", "-o", "o.onnx", "--max-params", "1M", "--report", "r.json", *FAST, cwd=work)
    ok(res)
    rep = report(work)
    assert rep["config"] == "spa.toml" and rep["ratio"] == 0.4
    assert gates_of(rep)["max-params"]["limit"] == 1_000_000
    assert any("excluded by --exclude 'fc*'" in b["reason"] for b in rep["blocked"])
    assert (work / "pr.md").is_file()
    res = run_spa("prune", "m.onnx", "-o", "o.onnx", "--max-params", "1M", "--exclude", "nothing*", "--report",
                  "r.json", *FAST, cwd=work)
    ok(res)  # a list on the command line replaces the file's list
    assert not any("excluded" in b["reason"] for b in report(work)["blocked"])


def test_config_found_in_a_parent_up_to_the_git_root(run_spa: Run, work: Path) -> None:
    (work / "spa.toml").write_text('ratio = 0.1\nreport = "r.json"\n')
    sub = work / "repo" / "models"
    sub.mkdir(parents=True)
    shutil.copy(work / "m.onnx", sub / "m.onnx")
    res = run_spa("prune", "m.onnx", "-o", "o.onnx", *FAST, cwd=sub)
    ok(res)
    rep = report(work)  # relative paths in the file are relative to its folder
    assert rep["ratio"] == 0.1 and rep["config"] == str(work / "spa.toml")
    (work / "r.json").unlink()
    (work / "repo" / ".git").mkdir()  # the repository root ends the search
    res = run_spa("prune", "m.onnx", "-o", "o.onnx", *FAST, cwd=sub)
    ok(res)
    assert "settings from" not in res.stdout and not (work / "r.json").exists()


def test_unknown_config_key_and_no_config(run_spa: Run, work: Path) -> None:
    (work / "spa.toml").write_text("ratoi = 0.3\n")
    before = listing(work)
    res = run_spa("prune", "m.onnx", cwd=work)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("spa: ")]
    assert len(errors) == 1 and "spa.toml: unknown key 'ratoi' (did you mean 'ratio'?)" in errors[0]
    assert listing(work) == before
    res = run_spa("prune", "m.onnx", "--no-config", "-o", "o.onnx", "--report", "r.json", *FAST, cwd=work)
    ok(res)
    assert report(work)["config"] is None and report(work)["ratio"] == 0.4
    (work / "spa.toml").write_text('ratio = "lots"\n')
    res = run_spa("prune", "m.onnx", cwd=work)
    assert res.returncode == 1 and "spa.toml: ratio = 'lots': not a number" in res.stderr
    good = work / "cfg" / "other.toml"
    good.parent.mkdir()
    good.write_text("ratio = 0.25\n")
    res = run_spa("prune", "m.onnx", "--config", good, "-o", "o.onnx", "--report", "r.json", *FAST, cwd=work)
    ok(res)  # --config wins over the broken spa.toml in the folder
    assert report(work)["ratio"] == 0.25
    res = run_spa("prune", "m.onnx", "--config", good, "--no-config", cwd=work)
    assert res.returncode == 2 and "not allowed with" in res.stderr


# ---- the examples: GitHub Actions workflow and pre-commit hooks ----------------------------


def _block(lines: list[str], i: int) -> list[str]:
    """The lines indented deeper than line ``i`` that follow it."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    out = []
    for ln in lines[i + 1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            break
        out.append(ln)
    return out


def _scalar(text: str) -> str:
    text = re.sub(r"\s+#.*$", "", text).strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text


def parse_workflow(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Top-level ``env`` and every step's ``name``/``run``/``uses``: PyYAML if installed, else a small parser
    (enough for the example's block scalars)."""
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        doc = yaml.safe_load(text)
        steps = [s for job in doc["jobs"].values() for s in job["steps"]]
        return {k: str(v) for k, v in doc["env"].items()}, [{k: str(v) for k, v in s.items()} for s in steps]
    lines = text.splitlines()
    env = {}
    top = lines.index("env:")
    for ln in _block(lines, top):
        if ln.strip() and not ln.strip().startswith("#"):
            key, _, value = ln.strip().partition(":")
            env[key] = _scalar(value)
    steps: list[dict[str, str]] = []
    col = -1  # the column of a step's keys
    for i, ln in enumerate(lines):
        m = re.match(r"^(\s*)(- )?(\w[\w-]*):\s*(.*)$", ln)
        if not m:
            continue
        if m[2]:
            if m[3] not in ("name", "uses", "run"):
                continue
            steps.append({})
            col = len(m[1]) + 2
        elif len(m[1]) != col:
            continue
        if m[3] not in ("name", "uses", "run"):
            continue
        value = m[4]
        if value.strip() in ("|", ">"):
            body = _block(lines, i)
            cut = min(len(b) - len(b.lstrip()) for b in body if b.strip())
            value = "\n".join(b[cut:] for b in body).strip("\n") + "\n"
        else:
            value = _scalar(value)
        steps[-1][m[3]] = value
    return env, steps


def test_example_parsers_without_yaml_agree_with_yaml() -> None:
    """The fallback parsers (used where PyYAML is not installed) read the examples as PyYAML does."""
    pytest.importorskip("yaml")
    workflow = (EXAMPLES / "github-actions" / "spa.yml").read_text()
    hook_files = [(EXAMPLES / "pre-commit" / n).read_text() for n in (".pre-commit-hooks.yaml", ".pre-commit-config.yaml")]
    with_yaml = parse_workflow(workflow), [_hook_lists(t) for t in hook_files]
    saved = sys.modules.get("yaml")
    sys.modules["yaml"] = None  # type: ignore[assignment]  # makes `import yaml` fail
    try:
        fallback = parse_workflow(workflow), [_hook_lists(t) for t in hook_files]
    finally:
        if saved is not None:
            sys.modules["yaml"] = saved
        else:
            del sys.modules["yaml"]
    (env, steps), hooks = with_yaml
    assert fallback[0][0] == env and fallback[1] == hooks
    for key in ("name", "run", "uses"):
        assert [s.get(key) for s in fallback[0][1]] == [s.get(key) for s in steps], key


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a workflow step as GitHub does (bash -eo pipefail), with ``spa`` as this Python's ``-m spa``."""
    prelude = f'spa() {{ {shlex.quote(sys.executable)} -m spa "$@"; }}\n'
    full_env = {**os.environ, **env}
    full_env.pop("PYTHONWARNINGS", None)
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", prelude + script], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_github_workflow_commands_run(tmp_path: Path, zoo: Path) -> None:
    env, steps = parse_workflow((EXAMPLES / "github-actions" / "spa.yml").read_text())
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/setup-python") for u in uses)
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    runs = {s["name"]: s["run"] for s in steps if "run" in s}
    assert "pip install" in runs["Install SPA"] and "gh pr comment" in runs["Comment on the pull request"]
    assert "spa prune" in runs["Prune with gates"] and "--markdown" in runs["Prune with gates"]
    (tmp_path / "models").mkdir()
    shutil.copy(zoo / MODEL, tmp_path / env["MODEL"])
    summary = tmp_path / "summary.md"
    # A CI runner measures the speedup of the real model; the tiny zoo model's latency is noise.
    env = {**env, "MIN_SPEEDUP": "0.01", "GITHUB_STEP_SUMMARY": str(summary)}
    # The zoo model's weights and BatchNorm statistics are random: obspa (the default) fits trained
    # statistics, so its drift there says nothing; l1 keeps this test about the workflow itself.
    (tmp_path / "spa.toml").write_text('criterion = "l1"\n')
    proc = _bash(runs["Prune with gates"], tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / env["OUT"]
    assert sorted(p.name for p in out.iterdir()) == ["model.pruned.onnx", "plan.json", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["gates_passed"] is True
    proc = _bash(runs["Job summary"], tmp_path, env)
    assert proc.returncode == 0 and summary.read_text() == (out / "report.md").read_text()
    shutil.rmtree(out)
    summary.unlink()
    proc = _bash(runs["Prune with gates"], tmp_path, {**env, "MAX_PARAMS": "1k"})  # a failing gate fails the step
    assert proc.returncode == 4 and "spa: gate failed: max-params" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]  # for the comment; no model
    assert "❌" in (out / "report.md").read_text()


def _hook_lists(text: str) -> list[dict[str, Any]]:
    """Hooks (``id``, ``entry``, ``args``) of a pre-commit YAML file: PyYAML if installed, else regexes."""
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        doc = yaml.safe_load(text)
        hooks = doc if isinstance(doc, list) else [h for r in doc["repos"] for h in r["hooks"]]
        return [{"id": h["id"], "entry": h.get("entry"), "args": [str(a) for a in h.get("args", [])],
                 "pass_filenames": h.get("pass_filenames", True)} for h in hooks]
    hooks: list[dict[str, Any]] = []
    for ln in text.splitlines():
        m = re.match(r"^\s*(- )?(id|entry|args|pass_filenames):\s*(.*)$", ln)
        if not m:
            continue
        key, value = m[2], m[3].strip()
        if key == "id":
            hooks.append({"id": value, "entry": None, "args": [], "pass_filenames": True})
        elif key == "args":
            hooks[-1]["args"] = [_scalar(a) for a in value.strip("[]").split(",") if a.strip()]
        elif key == "pass_filenames":
            hooks[-1]["pass_filenames"] = value == "true"
        else:
            hooks[-1][key] = _scalar(value)
    return hooks


def test_pre_commit_hooks_run(run_spa: Run, tmp_path: Path, zoo: Path) -> None:
    offered = {h["id"]: h for h in _hook_lists((EXAMPLES / "pre-commit" / ".pre-commit-hooks.yaml").read_text())}
    used = _hook_lists((EXAMPLES / "pre-commit" / ".pre-commit-config.yaml").read_text())
    (tmp_path / "models").mkdir()
    shutil.copy(zoo / MODEL, tmp_path / "models" / "model.onnx")
    (tmp_path / "spa.toml").write_text('criterion = "l1"\n')  # random weights: see test_github_workflow_commands_run
    before = listing(tmp_path)
    commands = []
    for hook in used:
        entry = hook["entry"] or offered[hook["id"]]["entry"]
        assert hook["pass_filenames"] is False or offered.get(hook["id"], {}).get("pass_filenames") is False
        commands.append(shlex.split(entry) + hook["args"])
    assert len(commands) == 2
    for cmd in commands:
        assert cmd[:2] == ["spa", "prune"] and "--dry-run" in cmd, cmd
        res = run_spa(*cmd[1:], cwd=tmp_path)
        ok(res)
        assert "gates: " in res.stdout and "dry run: no model written" in res.stdout
        res = run_spa(*cmd[1:], "--max-params=1k", cwd=tmp_path)  # a failing gate blocks the commit
        gate_failed(res, tmp_path, before, "max-params")
    assert listing(tmp_path) == before  # the hook never writes
