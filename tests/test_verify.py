"""Verification inputs: dynamic sizes take the shape probe's sizes (batch 2, 3 elsewhere), not 1.

With one token, attention attends to itself only and a rotary embedding is the identity, so a
model that mixes positions wrongly would pass. ``--shape`` / ``shapes=`` still set sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import model, w
from onnx import helper

import spa
from spa.check.verify import input_shapes, verify
from spa.errors import InvalidArgumentError


def _seq_model(mix_positions: bool) -> onnx.ModelProto:
    """y = x·W on [batch, seq, 4]; with ``mix_positions`` a CumSum over the sequence first
    (the same function as the other when seq == 1)."""
    inits: dict = {"w": w(4, 3, seed=5), "ax": np.array(1, np.int64)}
    nodes = [helper.make_node("MatMul", ["xs" if mix_positions else "x", "w"], ["y"])]
    if mix_positions:
        nodes.insert(0, helper.make_node("CumSum", ["x", "ax"], ["xs"]))
    return model(nodes, {"x": ["batch", "seq", 4]}, {"y": ["batch", "seq", 3]}, inits)


def test_dynamic_sizes_are_probe_sizes_and_named_dims_agree() -> None:
    m = model([helper.make_node("Add", ["a", "b"], ["y"])], {"a": ["batch", "seq", 4], "b": ["seq", 4]},
              {"y": ["batch", "seq", 4]})
    assert input_shapes(m) == {"a": [2, 3, 4], "b": [3, 4]}  # "seq" is 3 wherever it occurs
    assert input_shapes(m, batch=5) == {"a": [5, 3, 4], "b": [3, 4]}
    assert input_shapes(m, shapes={"a": [1, 7, 4]}) == {"a": [1, 7, 4], "b": [7, 4]}  # seq given by "a"
    with pytest.raises(InvalidArgumentError, match="not an input"):
        input_shapes(m, shapes={"c": [1]})
    with pytest.raises(InvalidArgumentError, match="rank"):
        input_shapes(m, shapes={"a": [1, 7]})


def test_several_positions_catch_what_one_token_hides() -> None:
    good, bad = _seq_model(False), _seq_model(True)
    v = verify(good, bad, None)
    assert not v.passed and v.shapes == {"x": [2, 3, 4]}
    one_token = verify(good, bad, None, shapes={"x": [2, 1, 4]})  # the old default: equal by accident
    assert one_token.passed
    assert verify(good, good, None).passed


def test_cli_verify_shape_override(run_spa, tmp_path: Path) -> None:  # noqa: ANN001 - conftest fixture
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    spa.save_model(_seq_model(False), good)
    spa.save_model(_seq_model(True), bad)
    assert run_spa("verify", good, bad).returncode == 3
    # One token hides the CumSum; a stated shape is the typical run, and every dynamic axis is also
    # checked at a second size (batch 1, two tokens), which catches it.
    res = run_spa("verify", good, bad, "--shape", "x:2x1x4")
    assert res.returncode == 3 and "input sizes: x:2x1x4; x:1x2x4" in res.stdout
    assert run_spa("verify", good, good, "--shape", "x:2x1x4").returncode == 0
    res = run_spa("verify", good, bad, "--shape", "nope:1x1x4")
    assert res.returncode != 0 and "not an input" in res.stderr and "Traceback" not in res.stderr
