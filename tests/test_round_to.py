"""--round-to auto (the command line's default): multiples of 8 in groups of >= 16 units."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import spa
from spa.analysis.groups import Group
from spa.errors import InvalidArgumentError
from spa.planning.selection import AUTO_MIN_UNITS, AUTO_MULTIPLE, check_round_to, select_units

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


def _group(gid: int, n: int) -> Group:
    return Group(id=gid, members=[(f"w{gid}", 0)], n_units=n, unit_of={(f"w{gid}", 0): np.arange(n)})


@pytest.mark.parametrize("n,ratio", [(4, 0.4), (8, 0.4), (15, 0.5), (16, 0.4), (24, 0.3), (64, 0.4), (100, 0.45)])
def test_auto_rounds_groups_of_16_or_more(n: int, ratio: float) -> None:
    kept = len(select_units([_group(0, n)], {0: np.arange(float(n))}, ratio, round_to="auto")[0])
    exact = n - math.floor(ratio * n)
    if n >= AUTO_MIN_UNITS:
        assert kept == min(n, math.ceil(exact / AUTO_MULTIPLE) * AUTO_MULTIPLE)
        assert kept % AUTO_MULTIPLE == 0 or kept == n
    else:
        assert kept == exact


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("AUTO", "auto"), ("8", 8), (16, 16), ("1", 1)])
def test_check_round_to(value, expected) -> None:  # noqa: ANN001
    assert check_round_to(value) == expected


@pytest.mark.parametrize("value", ["0", 0, -8, "eight", "", 2.5, True])
def test_check_round_to_refuses(value) -> None:  # noqa: ANN001
    with pytest.raises(InvalidArgumentError):
        check_round_to(value)


def test_api_keeps_exact_ratios_by_default() -> None:
    _, plan, _ = spa.prune(ZOO / "mobilenetv2.ts.onnx", ratio=0.4)
    assert plan.options["round_to"] == 1
    assert all(g.kept_units == g.units - math.floor(0.4 * g.units) for g in plan.groups if g.status == "pruned")


def test_cli_defaults_to_auto(run_spa, tmp_path: Path) -> None:
    shutil.copy(ZOO / "mobilenetv2.ts.onnx", tmp_path / "m.onnx")
    # l1 rather than the default obspa: the rounding does not depend on the criterion, and l1 is milliseconds.
    code, _, err = run_spa("prune", "m.onnx", "--ratio", "0.4", "--plan", "p.json", "-o", "a.onnx", "--criterion", "l1",
                           cwd=tmp_path)
    assert code == 0, err
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["options"]["round_to"] == "auto"
    pruned = [g for g in plan["groups"] if g["status"] == "pruned"]
    assert pruned and all(g["kept_units"] % 8 == 0 for g in pruned if g["units"] >= 16)
    assert any(g["units"] >= 16 and g["kept_units"] != g["units"] - math.floor(0.4 * g["units"]) for g in pruned)
    code, _, err = run_spa("prune", "m.onnx", "--ratio", "0.4", "--round-to", "1", "--plan", "q.json", "-o", "b.onnx",
                           "--criterion", "l1", cwd=tmp_path)
    assert code == 0, err
    exact = json.loads((tmp_path / "q.json").read_text())
    assert all(g["kept_units"] == g["units"] - math.floor(0.4 * g["units"]) for g in exact["groups"]
               if g["status"] == "pruned")
    code, _, err = run_spa("prune", "m.onnx", "--round-to", "eight", cwd=tmp_path)
    assert code == 2 and "--round-to" in err and "Traceback" not in err


def test_round_to_from_a_settings_file(run_spa, tmp_path: Path) -> None:
    shutil.copy(ZOO / "mobilenetv2.ts.onnx", tmp_path / "m.onnx")
    (tmp_path / "spa.toml").write_text("round-to = 1\n")
    code, _, err = run_spa("prune", "m.onnx", "--plan", "p.json", "-o", "a.onnx", "--criterion", "l1", cwd=tmp_path)
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["options"]["round_to"] == 1


def test_report_names_every_group_rounding_or_the_ratio_left_unchanged(run_spa, tmp_path: Path) -> None:
    # The quickstart model: three 16-unit groups keep all units at 0.4 with --round-to auto (10 kept
    # round up to 16); the report says so for each, on the console and in the JSON.
    src = tmp_path / "m.onnx"
    shutil.copy(ZOO / "resnet_basic.ts.onnx", src)
    code, out, err = run_spa("prune", src, "--ratio", "0.4", "--criterion", "l1", "--report", tmp_path / "r.json",
                             cwd=tmp_path)
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert len(r["unchanged"]) == r["groups_unchanged"] == 3
    for u in r["unchanged"]:
        assert u["units"] == 16 and "--round-to auto (multiples of 8 here) rounds the 10 kept up to all 16" in u["reason"]
        assert f"unchanged group {u['group']} (" in out
    # at --round-to 1 nothing is left unchanged; at a ratio too small for a group, the ratio is named
    _, _, rep = spa.prune(src, 0.4, "l1", selection=spa.Selection(round_to=1))
    assert rep.unchanged == [] and rep.groups_unchanged == 0
    _, _, rep = spa.prune(src, 0.05, "l1", selection=spa.Selection(round_to=1))
    assert rep.unchanged and all("removes floor(0.05 x 16) = 0 of its 16 units" in u.reason for u in rep.unchanged)
    _, _, rep = spa.prune(src, 0.05, "l1", selection=spa.Selection(global_ranking=True))
    assert all("--global" in u.reason for u in rep.unchanged)
