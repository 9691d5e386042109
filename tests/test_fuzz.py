"""Malformed models never crash ``spa``: a seeded mutator over the zoo (:mod:`benchmarks.fuzz`).

Every mutant (truncated or byte-flipped files, raw data shorter than the dims, wrong, huge and
negative dims, deleted and dangling node inputs, swapped op types, cycles, opset 7 and 99, a
graph without outputs) goes through ``spa prune`` and ``spa groups``, in this process through
:func:`spa.cli.app.main` (one subprocess each would take minutes). Each run must end with exit 0, 1
or 2 only, one ``spa: error:`` line on failure, no traceback, no "This is a bug in SPA", the
input untouched, and no file left behind but a complete output on exit 0.

The named cases below pin the message each kind of damage gets. ``python -m benchmarks.fuzz
--count 680`` runs the same check on many more mutants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.fuzz import KINDS, check_run, fuzz_one, listing, mutate, run_cli
from spa.model.runtime import make_session

#: Small zoo models of both exporters: a residual net, depthwise convs, a squeeze-excite block.
SOURCES = ("resnet_basic.ts.onnx", "mobilenetv2.dynamo.onnx", "se_block.ts.onnx", "densenet_block.dynamo.onnx")
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_mutants_end_cleanly(kind: str, tmp_path: Path, zoo: Path) -> None:
    found = {}
    for k, src in enumerate(SOURCES):
        for seed in SEEDS:
            problems = fuzz_one(zoo / src, kind, 100 * k + seed, tmp_path, commands=("prune", "groups"))
            if problems:
                found[f"{src}:{kind}:{100 * k + seed}"] = problems
    assert not found, found
    assert not list(tmp_path.iterdir()), "the mutant or an output was left behind"


#: Mutants that ``python -m benchmarks.fuzz --count 680`` found crashing or blaming SPA, each fixed:
#: a UTF-8-invalid name (UnicodeDecodeError in the checker), a Conv left with (weight, bias) as
#: (X, W) (IndexError in MACs, then in the grouped-conv rule), dead nodes after a deleted input
#: (PassError), a graph without outputs (PassError), an Add that makes an Expand invalid, which the
#: checker does not see (the original does not load in onnxruntime: 'fails onnx.checker ... bug').
FOUND = [("densenet_block.dynamo.onnx", "flip_bytes", 1021), ("mobilenetv2.dynamo.onnx", "delete_input", 1120),
         ("resnext.dynamo.onnx", "delete_input", 621), ("resnext.ts.onnx", "delete_input", 5375),
         ("conv_flatten_linear.ts.onnx", "no_outputs", 1229), ("resnet_basic.dynamo.onnx", "swap_op_type", 654)]


@pytest.mark.parametrize("source,kind,seed", FOUND, ids=[f"{k}-{s}" for _, k, s in FOUND])
def test_campaign_findings(source: str, kind: str, seed: int, tmp_path: Path, zoo: Path) -> None:
    assert not fuzz_one(zoo / source, kind, seed, tmp_path, commands=("prune", "groups"))


#: Found with ``--criterion obspa``: weights of 1e35 (a flipped exponent byte) overflowed obspa's
#: scores and refit (ValueError: bad scores, then PassError: NaN weights never settle), a Conv bias
#: of the wrong length (an Add where an Expand was) broke its bias vector (ValueError).
FOUND_OBSPA = [("se_block.ts.onnx", "flip_bytes", 30035), ("resnet_basic.dynamo.onnx", "swap_op_type", 30160),
               ("densenet_block.ts.onnx", "flip_bytes", 30269)]


@pytest.mark.parametrize("source,kind,seed", FOUND_OBSPA, ids=[f"{k}-{s}" for _, k, s in FOUND_OBSPA])
def test_campaign_findings_obspa(source: str, kind: str, seed: int, tmp_path: Path, zoo: Path) -> None:
    assert not fuzz_one(zoo / source, kind, seed, tmp_path, criterion="obspa")


def test_mutations_are_deterministic_and_change_the_model(zoo: Path) -> None:
    data = (zoo / SOURCES[0]).read_bytes()
    for kind in KINDS:
        assert mutate(data, kind, 3) == mutate(data, kind, 3), kind
        assert mutate(data, kind, 3) != data, kind


# ---- named cases: the message each kind of damage gets -------------------------------------


def _run_on(tmp_path: Path, model: onnx.ModelProto | bytes, *args: str) -> tuple[str, object]:
    """``spa prune m.onnx -o out.onnx ARGS`` in process; asserts the run property, returns the
    error line (or "") and the run."""
    path = tmp_path / "m.onnx"
    data = model if isinstance(model, bytes) else model.SerializeToString()
    path.write_bytes(data)
    before = listing(tmp_path)
    res = run_cli(["prune", str(path), "-o", str(tmp_path / "out.onnx"), *args])
    assert not check_run(res, tmp_path, path, before, data, ("out.onnx",)), (res.stderr, res.exception)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("spa: error:")]
    return (errors[0] if errors else ""), res


def _conv_model(opset: int = 13) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "W2")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "W1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Conv", ["b", "W2"], ["y"])],
        "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_huge_dimension(tmp_path: Path) -> None:
    # Was a numpy MemoryError (spa/analysis/groups.py) or an allocation of PiB of random inputs.
    m = _conv_model()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1 << 40
    line, res = _run_on(tmp_path, m)
    assert res.code == 1 and "dimension 1099511627776 (2^40) is too large" in line, line
    m = _conv_model()
    m.graph.initializer[0].dims[0] = 1 << 40
    line, _ = _run_on(tmp_path, m)
    assert "initializer 'W1'" in line and "2^40" in line and "too large" in line, line


def test_input_too_large_to_run(tmp_path: Path) -> None:
    m = _conv_model()
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, (1, 3, 1 << 20, 1 << 20)):
        d.dim_value = v
    line, res = _run_on(tmp_path, m)
    assert res.code == 1 and "input 'x' of shape [1, 3, 1048576, 1048576]" in line and "too many" in line, line


def test_negative_dimension(tmp_path: Path) -> None:
    m = _conv_model()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = -3
    line, res = _run_on(tmp_path, m)
    assert res.code == 1 and "tensor 'x' has a negative dimension -3" in line, line


def test_minus_one_is_a_dynamic_dimension(tmp_path: Path) -> None:
    # Paddle2ONNX (PaddleOCR's models in rapidocr-onnxruntime) writes dim_value -1 for a dynamic
    # axis, and onnxruntime reads it so: the model prunes, and the batch stays dynamic.
    m = _conv_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    line, res = _run_on(tmp_path, m, "--criterion", "l1")
    assert res.code == 0 and line == "", (line, res.stderr)
    out = onnx.load(str(tmp_path / "out.onnx"))
    for vi in (out.graph.input[0], out.graph.output[0]):
        first = vi.type.tensor_type.shape.dim[0]
        assert not first.HasField("dim_value") and [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]][0] > 0
    sess = make_session(out)
    for n in (1, 3):
        assert sess.run(None, {"x": np.zeros((n, 3, 8, 8), np.float32)})[0].shape[0] == n


@pytest.mark.parametrize("damage", ["short", "long", "dims"])
def test_initializer_data_does_not_match_dims(damage: str, tmp_path: Path) -> None:
    # Was a reshape ValueError (spa/model/graph.py) or onnx's ValidationError (spa/rewrite.py).
    m = _conv_model()
    w = m.graph.initializer[1]
    if damage == "short":
        w.raw_data = w.raw_data[:100]
    elif damage == "long":
        w.raw_data = w.raw_data + b"\0" * 8
    else:
        w.dims[1] = 9
    line, res = _run_on(tmp_path, m)
    # onnx's checker sees small tensors' data itself; SPA's own check covers what it does not
    assert res.code == 1 and "W2" in line and ("holds" in line or "raw_data size" in line), line


def test_typed_data_does_not_match_dims(tmp_path: Path) -> None:
    m = _conv_model()
    # Large enough (over 1024 elements) that the structural check sees no data: SPA's own check must
    bad = TensorProto(name="W2", data_type=TensorProto.FLOAT, dims=[64, 8, 3, 3])
    bad.float_data.extend([0.5] * 10)
    m.graph.initializer[1].CopyFrom(bad)
    line, _ = _run_on(tmp_path, m)
    assert "initializer 'W2' holds 10 values, but its shape [64, 8, 3, 3] needs 4608" in line, line


@pytest.mark.parametrize("opset,fragment", [(7, "opset 7 is older than 11"), (99, "opset 99 is newer than")])
def test_unsupported_opset(opset: int, fragment: str, tmp_path: Path) -> None:
    line, res = _run_on(tmp_path, _conv_model(opset))
    assert res.code == 1 and fragment in line, line


def test_no_default_opset(tmp_path: Path) -> None:
    m = _conv_model()
    m.opset_import[0].domain = "ai.onnx.ml"
    line, _ = _run_on(tmp_path, m)
    assert line, "a model without the default domain must be refused"


@pytest.mark.parametrize("damage", ["dangling", "cycle", "no_outputs"])
def test_broken_graph(damage: str, tmp_path: Path) -> None:
    m = _conv_model()
    if damage == "dangling":
        m.graph.node[1].input[0] = "nowhere"
    elif damage == "cycle":
        m.graph.node[0].input[0] = "b"
    else:
        del m.graph.output[:]
    line, res = _run_on(tmp_path, m)
    assert res.code == 1 and ("fails onnx.checker" in line or "no outputs" in line), line


def test_deleted_conv_input(tmp_path: Path, zoo: Path) -> None:
    # A Conv left with (weight, bias) as (X, W): was an IndexError in spa/model/metrics.py.
    m = onnx.load(str(zoo / "mobilenetv2.dynamo.onnx"))
    conv = next(n for n in m.graph.node if n.op_type == "Conv" and len(n.input) == 3 and n.name)
    del conv.input[0]
    _run_on(tmp_path, m, "--criterion", "l1")
