"""ONNX's own backend node-test models through ``spa prune``: each ends cleanly.

ONNX ships one tiny model per operator case (:mod:`onnx.backend.test.case.node`). Almost none
has anything to prune, and many cannot run on random inputs (Gather indices, Slice starts, bool
conditions of If and Loop). A deterministic sample of 40 goes through the command line in this
process (:func:`benchmarks.fuzz.run_cli`): exit 0 (nothing to prune, or pruned) or 1 with one
``spa: error:`` line, never a traceback, never "This is a bug in SPA", nothing written on exit 1.
On the whole set (``python -m benchmarks.node_tests``) 542 of 1884 used to end in "This is a
bug in SPA".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest

from benchmarks.fuzz import check_run, listing, run_cli

SAMPLE = 40


@pytest.fixture(scope="module")
def node_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every 1/SAMPLE-th backend node-test model, by name, saved in a folder of its own."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = sorted((c for c in collect_testcases(None) if c.model is not None), key=lambda c: c.name)
    step = max(1, len(cases) // SAMPLE)
    out = []
    for case in cases[::step][:SAMPLE]:
        folder = tmp_path_factory.mktemp(case.name)
        onnx.save(case.model, str(folder / "m.onnx"))
        out.append(folder / "m.onnx")
    return out


def test_node_models_end_cleanly(node_models: list[Path]) -> None:
    assert len(node_models) == SAMPLE
    found = {}
    for path in node_models:
        data = path.read_bytes()
        before = listing(path.parent)
        res = run_cli(["prune", str(path), "-o", str(path.parent / "out.onnx")])
        problems = check_run(res, path.parent, path, before, data, ("out.onnx",))
        if res.code not in (0, 1):
            problems.append(f"exit {res.code}")
        if problems:
            found[path.parent.name] = problems + [res.stderr[-300:]]
    assert not found, found
