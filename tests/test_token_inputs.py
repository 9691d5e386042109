"""Valid synthetic inputs for token models and KV-cache decoders (:mod:`spa.model.inputs`), and
``--inputs DATA.npz`` for the inputs SPA cannot derive.

Models: tiny graphs built with ``onnx.helper`` (an embedding behind a shift, a position table, a
mask whose length is ``past + seq``, an optimum-style decoder with a KV cache), and the committed
optimum-onnx export of a small Llama, ``models/zoo/hf/optimum/llama_kv.onnx``
(``python -m models.optimum_llama``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from spa.model.graph import ModelContext
from spa.model.inputs import InputSynthesisError, derive_domains, resolve_shapes, synthesis_error, use_inputs
from spa.model.runtime import random_inputs
from spa.scoring.synthetic import synthetic_batches

ROOT = Path(__file__).resolve().parents[1]
LLAMA_KV = ROOT / "models" / "zoo" / "hf" / "optimum" / "llama_kv.onnx"
RNG = np.random.default_rng(0)

Dims = list[int | str]


def _vi(name: str, et: int, dims: Dims | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, et, dims)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _runs(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def shifted_embedding(vocab: int = 7, shift: int = -2) -> onnx.ModelProto:
    """ids -> Cast -> Add(shift) -> Unsqueeze -> Gather(table of ``vocab`` rows): valid ids are
    ``[-shift, vocab - shift)``; token types index a table of 2 rows directly."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Add", ["ids32", "shift"], ["moved"]),
        helper.make_node("Unsqueeze", ["moved", "ax"], ["moved1"]),
        helper.make_node("Gather", ["table", "moved1"], ["e"]),
        helper.make_node("Gather", ["types", "tt"], ["t"]),
        helper.make_node("Unsqueeze", ["t", "ax"], ["t1"]),
        helper.make_node("Add", ["e", "t1"], ["y"]),
    ]
    return _model(nodes, [_vi("ids", TensorProto.INT64, ["B", "S"]), _vi("tt", TensorProto.INT64, ["B", "S"])],
                  [_vi("y", TensorProto.FLOAT, ["B", 1, "S", 4])],
                  {"table": _w(vocab, 4), "types": _w(2, 4), "shift": np.array(shift, np.int32),
                   "ax": np.array([1], np.int64)})


def kv_decoder(vocab: int = 7, positions: int = 16, hidden: int = 16, mask_dim: str = "past + seq") -> onnx.ModelProto:
    """An optimum-style decoder layer: ``input_ids``, ``attention_mask`` of length ``mask_dim``,
    ``position_ids`` into a learned table, ``past_key_values.0.{key,value}`` of length ``past``,
    one attention head, an MLP (the prunable group), ``logits`` and ``present.0.*``.

    The mask is reshaped to ``(B, 1, 1, past + seq)`` from the keys' length, so a mask of any
    other length fails in onnxruntime, as in the exported Llama."""
    h = hidden
    nodes = [
        helper.make_node("Gather", ["wte", "input_ids"], ["tok"]),
        helper.make_node("Gather", ["wpe", "position_ids"], ["pos"]),
        helper.make_node("Add", ["tok", "pos"], ["x"]),
        *[helper.make_node("MatMul", ["x", f"w{p}"], [p]) for p in "qkv"],
        *[helper.make_node("Unsqueeze", [p, "one"], [f"{p}1"]) for p in "qkv"],
        helper.make_node("Concat", ["past_key_values.0.key", "k1"], ["present.0.key"], axis=2),
        helper.make_node("Concat", ["past_key_values.0.value", "v1"], ["present.0.value"], axis=2),
        helper.make_node("Transpose", ["present.0.key"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q1", "kt"], ["scores"]),
        helper.make_node("Shape", ["input_ids"], ["batch"], end=1),
        helper.make_node("Shape", ["present.0.key"], ["total"], start=2, end=3),
        helper.make_node("Concat", ["batch", "ones2", "total"], ["mask_shape"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["maskf", "mask_shape"], ["mask4"]),
        helper.make_node("Sub", ["mask4", "onef"], ["off"]),
        helper.make_node("Mul", ["off", "big"], ["bias"]),
        helper.make_node("Add", ["scores", "bias"], ["biased"]),
        helper.make_node("Softmax", ["biased"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "present.0.value"], ["ctx1"]),
        helper.make_node("Squeeze", ["ctx1", "one"], ["ctx"]),
        helper.make_node("MatMul", ["ctx", "wo"], ["att"]),
        helper.make_node("Add", ["x", "att"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w1"], ["up"]),
        helper.make_node("Relu", ["up"], ["act"]),
        helper.make_node("MatMul", ["act", "w2"], ["down"]),
        helper.make_node("Add", ["r1", "down"], ["r2"]),
        helper.make_node("MatMul", ["r2", "head"], ["logits"]),
    ]
    cache = ["B", 1, "past", h]
    inputs = [_vi("input_ids", TensorProto.INT64, ["B", "seq"]), _vi("attention_mask", TensorProto.INT64, ["B", mask_dim]),
              _vi("position_ids", TensorProto.INT64, ["B", "seq"]),
              _vi("past_key_values.0.key", TensorProto.FLOAT, cache), _vi("past_key_values.0.value", TensorProto.FLOAT, cache)]
    present = ["B", 1, "past + seq", h]
    outputs = [_vi("logits", TensorProto.FLOAT, ["B", "seq", vocab]), _vi("present.0.key", TensorProto.FLOAT, present),
               _vi("present.0.value", TensorProto.FLOAT, present)]
    inits = {"wte": _w(vocab, h), "wpe": _w(positions, h), "wq": _w(h, h), "wk": _w(h, h), "wv": _w(h, h),
             "wo": _w(h, h), "w1": _w(h, 2 * h), "w2": _w(2 * h, h), "head": _w(h, vocab),
             "one": np.array([1], np.int64), "ones2": np.array([1, 1], np.int64), "onef": np.array(1, np.float32),
             "big": np.array(1e4, np.float32)}
    return _model(nodes, inputs, outputs, inits)


def reshape_by_input() -> onnx.ModelProto:
    """A Reshape whose target shape is an input: nothing in the graph bounds its values."""
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("MatMul", ["b", "W2"], ["c"]), helper.make_node("Reshape", ["c", "shape"], ["y"])]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, ["n", 8]), _vi("shape", TensorProto.INT64, [2])],
                  [_vi("y", TensorProto.FLOAT, ["a", "b"])], {"W1": _w(8, 16), "W2": _w(16, 6)})


# ---- value domains -------------------------------------------------------------------------------

def test_indices_are_bounded_by_the_table_they_reach_through_casts_and_shifts() -> None:
    m = shifted_embedding(vocab=7, shift=-2)
    d = {x.name: x for x in derive_domains(m).inputs}
    assert (d["ids"].kind, d["ids"].low, d["ids"].high) == ("indices", 2, 9)
    assert (d["tt"].kind, d["tt"].low, d["tt"].high) == ("indices", 0, 2)
    feeds = random_inputs(m, seed=3, shapes={"ids": [4, 50]}, batch=4)
    assert feeds["tt"].shape == (4, 50)  # "S" is one size for both inputs
    assert 2 <= feeds["ids"].min() and feeds["ids"].max() < 9 and set(np.unique(feeds["tt"])) <= {0, 1}
    _runs(m, feeds)


def test_one_hot_input_spans_the_categories_it_is_compared_with() -> None:
    """tf2onnx writes ``jax.nn.one_hot(bytes, 257)`` (magika) as ``Equal(Expand(Reshape(x)), [0..256])``."""
    cats = np.arange(257, dtype=np.int32).reshape(1, 1, 257)
    nodes = [helper.make_node("Reshape", ["bytes", "shape3"], ["r"]), helper.make_node("Equal", ["r", "cats"], ["eq"]),
             helper.make_node("Cast", ["eq"], ["oh"], to=TensorProto.FLOAT), helper.make_node("MatMul", ["oh", "W"], ["y"])]
    m = _model(nodes, [_vi("bytes", TensorProto.INT32, ["n", 16])], [_vi("y", TensorProto.FLOAT, ["n", 16, 4])],
               {"shape3": np.array([-1, 16, 1], np.int64), "cats": cats, "W": _w(257, 4)})
    d = derive_domains(m).inputs[0]
    assert (d.kind, d.low, d.high) == ("indices", 0, 257)
    values = random_inputs(m, seed=0, batch=64)["bytes"]
    assert values.max() > 200 and values.min() >= 0  # not the [0, 10) of an underived integer


def test_kv_cache_prefill_has_an_empty_cache_and_a_mask_as_long_as_the_tokens() -> None:
    m = kv_decoder()
    domains = derive_domains(m)
    kinds = {x.name: x.kind for x in domains.inputs}
    assert kinds == {"input_ids": "indices", "attention_mask": "mask", "position_ids": "positions",
                     "past_key_values.0.key": "cache", "past_key_values.0.value": "cache"}
    assert domains.past == {"past"}
    feeds = random_inputs(m, seed=0, batch=2)
    assert feeds["past_key_values.0.key"].shape == (2, 1, 0, 16)
    assert feeds["attention_mask"].shape == feeds["input_ids"].shape == (2, 1)
    assert (feeds["attention_mask"] == 1).all() and feeds["input_ids"].max() < 7
    _runs(m, feeds)


def test_decode_step_mask_covers_cache_and_positions_continue_from_it() -> None:
    m = kv_decoder(positions=16)
    feeds = random_inputs(m, seed=0, shapes={"past_key_values.0.key": [2, 1, 5, 16], "input_ids": [2, 3]})
    assert feeds["past_key_values.0.value"].shape == (2, 1, 5, 16)  # named alike: same past length
    assert feeds["attention_mask"].shape == (2, 8)
    assert feeds["position_ids"].tolist() == [[5, 6, 7]] * 2
    _runs(m, feeds)
    # probe-style hints give every dynamic axis one size; the mask's expression still wins
    hinted = random_inputs(m, shapes={n: [2] + [3] * (a.ndim - 1) for n, a in feeds.items()})
    assert hinted["attention_mask"].shape == (2, 6)
    # positions wrap around a table the past has outgrown
    far = random_inputs(m, shapes={"past_key_values.0.key": [1, 1, 14, 16], "input_ids": [1, 4]})
    assert far["position_ids"].tolist() == [[14, 15, 0, 1]]
    _runs(m, far)


def test_a_mask_with_a_plain_symbolic_length_still_covers_the_cache() -> None:
    m = kv_decoder(mask_dim="total_length")
    feeds = random_inputs(m, shapes={"past_key_values.0.key": [1, 1, 4, 16], "input_ids": [1, 2]})
    assert feeds["attention_mask"].shape == (1, 6)
    _runs(m, feeds)


def test_synthetic_batches_draw_valid_tokens_and_an_empty_cache() -> None:
    m = kv_decoder()
    batches = list(synthetic_batches(ModelContext(m), 2, 4, seed=1))
    for feeds in batches:
        assert feeds["input_ids"].max() < 7 and feeds["past_key_values.0.key"].shape[2] == 0
        _runs(m, feeds)
    assert not np.array_equal(batches[0]["input_ids"], batches[1]["input_ids"])


def test_sizes_follow_dims_written_as_expressions() -> None:
    domains = derive_domains(kv_decoder())
    sizes = resolve_shapes(domains, {"input_ids": [3, 4], "past_key_values.0.key": [3, 1, 2, 16]}, lambda d, k: 1)
    assert sizes["attention_mask"] == (3, 6) and sizes["position_ids"] == (3, 4)


def test_boolean_masks_attend_everywhere_and_float_models_draw_as_before() -> None:
    m = _model([helper.make_node("Where", ["mask", "x", "zero"], ["y"])],
               [_vi("mask", TensorProto.BOOL, ["B", 3]), _vi("x", TensorProto.FLOAT, ["B", 3])],
               [_vi("y", TensorProto.FLOAT, ["B", 3])], {"zero": np.zeros(1, np.float32)})
    feeds = random_inputs(m, seed=4, batch=2)
    assert feeds["mask"].all()
    # a model without token inputs gets the numbers it always got: N(0, 1) in input order
    plain = random_inputs(shifted_embedding(), seed=4)
    assert feeds["x"].tolist() == np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32).tolist()
    assert plain["ids"].shape == (1, 1)


def test_axes_inputs_get_distinct_axes_within_rank() -> None:
    m = _model([helper.make_node("ReduceSum", ["x", "axes"], ["r"], keepdims=1),
                helper.make_node("Unsqueeze", ["x", "new"], ["y"])],
               [_vi("x", TensorProto.FLOAT, [2, 3, 4]), _vi("axes", TensorProto.INT64, [1]),
                _vi("new", TensorProto.INT64, [2])],
               [_vi("r", TensorProto.FLOAT, ["a", "b", "c"]), _vi("y", TensorProto.FLOAT, ["a", "b", "c", "d", "e"])], {})
    d = {x.name: x for x in derive_domains(m).inputs}
    assert (d["axes"].kind, d["axes"].high, d["new"].kind, d["new"].high) == ("axes", 3, "axes", 5)
    for seed in range(20):
        feeds = random_inputs(m, seed=seed)
        assert 0 <= feeds["axes"][0] < 3 and len(set(feeds["new"].tolist())) == 2
        _runs(m, feeds)


def test_an_input_nothing_bounds_is_marked_and_named_in_the_error() -> None:
    m = reshape_by_input()
    (shape,) = [d for d in derive_domains(m).inputs if d.name == "shape"]
    assert not shape.derived
    try:
        _runs(m, random_inputs(m, seed=0))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        err = synthesis_error(m, exc)
    else:
        pytest.fail("a random Reshape target ran")
    assert isinstance(err, InputSynthesisError)
    assert "'shape' (int64)" in str(err) and "--inputs DATA.npz" in str(err) and "\n" not in str(err)


def test_supplied_inputs_replace_synthetic_ones_and_fit_asked_sizes() -> None:
    from spa.model.inputs import SuppliedInputs

    m = kv_decoder()
    real = {"input_ids": np.array([[1, 2, 3, 4]], np.int64), "attention_mask": np.ones((1, 4), np.int64),
            "position_ids": np.array([[0, 1, 2, 3]], np.int64),
            "past_key_values.0.key": np.zeros((1, 1, 0, 16), np.float32),
            "past_key_values.0.value": np.zeros((1, 1, 0, 16), np.float32)}
    with use_inputs(SuppliedInputs(real, "real.npz")):
        same = random_inputs(m)
        fitted = random_inputs(m, shapes={"input_ids": [2, 2]})
        cached = random_inputs(m, shapes={"past_key_values.0.key": [1, 1, 3, 16]})  # a probe's decode step
    assert same["input_ids"].tolist() == [[1, 2, 3, 4]]
    assert fitted["input_ids"].tolist() == [[1, 2], [1, 2]] and fitted["attention_mask"].shape == (2, 2)
    assert cached["past_key_values.0.value"].shape == (1, 1, 3, 16) and cached["attention_mask"].shape == (1, 7)
    assert cached["input_ids"].tolist() == [[1, 2, 3, 4]]
    for feeds in (fitted, cached):
        _runs(m, feeds)


def test_synthetic_batches_take_supplied_values_only_where_they_cannot_derive_them() -> None:
    from spa.model.inputs import SuppliedInputs

    m = reshape_by_input()
    real = {"x": np.zeros((1, 8), np.float32), "shape": np.array([-1, 3], np.int64)}
    with use_inputs(SuppliedInputs(real, "real.npz")):
        (feeds,) = synthetic_batches(ModelContext(m), 1, 4)
    assert feeds["shape"].tolist() == [-1, 3] and feeds["x"].shape == (4, 8) and feeds["x"].std() > 0.5
    _runs(m, feeds)


# ---- the command line ----------------------------------------------------------------------------

def _prefill_and_decode(path: Path) -> None:
    """The pruned decoder runs at prefill (empty cache), then a decode step fed its cache."""
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values")]
    feeds = {i.name: np.zeros([2, i.shape[1], 0, i.shape[3]], np.float32) for i in pasts}
    feeds.update(input_ids=np.array([[1, 2, 3], [4, 5, 6]], np.int64), attention_mask=np.ones((2, 3), np.int64),
                 position_ids=np.array([[0, 1, 2]] * 2, np.int64))
    out = dict(zip(names, sess.run(None, feeds)))
    assert np.isfinite(out["logits"]).all() and out["logits"].shape[:2] == (2, 3)
    feeds = {k.replace("present", "past_key_values"): v for k, v in out.items() if k.startswith("present")}
    feeds.update(input_ids=np.array([[3], [2]], np.int64), attention_mask=np.ones((2, 4), np.int64),
                 position_ids=np.array([[3]] * 2, np.int64))
    step = dict(zip(names, sess.run(None, feeds)))
    assert np.isfinite(step["logits"]).all() and step["logits"].shape[:2] == (2, 1)
    assert step[names[1]].shape[2] == 4


def test_cli_prunes_a_helper_built_kv_decoder_with_defaults(tmp_path: Path, run_spa) -> None:  # noqa: ANN001
    src, out = tmp_path / "dec.onnx", tmp_path / "dec.pruned.onnx"
    onnx.save(kv_decoder(), str(src))
    r = run_spa("prune", src, "--ratio", "0.4")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "could not be run" not in r.stderr  # obspa ran: no fallback warning
    assert "1 pruned" in r.stdout
    _prefill_and_decode(out)


def test_cli_prunes_the_optimum_llama_with_the_default_criterion(tmp_path: Path, run_spa) -> None:  # noqa: ANN001
    out = tmp_path / "llama.pruned.onnx"
    r = run_spa("prune", LLAMA_KV, "--ratio", "0.4", "-o", out, "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "could not be run" not in r.stderr
    assert '"criterion": "obspa"' in (tmp_path / "r.json").read_text()
    assert onnx.load(str(out)).graph.initializer  # written
    assert out.stat().st_size < LLAMA_KV.stat().st_size
    _prefill_and_decode(out)


def test_cli_names_the_input_it_cannot_synthesise_and_takes_inputs(tmp_path: Path, run_spa) -> None:  # noqa: ANN001
    src = tmp_path / "m.onnx"
    onnx.save(reshape_by_input(), str(src))
    r = run_spa("prune", src, "--ratio", "0.4", "--criterion", "l1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line, failed = [ln for ln in r.stderr.splitlines() if ln.strip()]  # no onnxruntime log lines either
    assert line.startswith("spa: error:") and failed.startswith("FAILED")
    assert "input 'shape'" in line and "--inputs DATA.npz" in line
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, shape=np.array([-1, 3], np.int64))
    r = run_spa("prune", src, "--ratio", "0.4", "--criterion", "l1", "--inputs", tmp_path / "in.npz",
                "--plan", tmp_path / "plan.json")
    assert r.returncode == 0, r.stderr
    r = run_spa("verify", src, tmp_path / "m.pruned.onnx", "--plan", tmp_path / "plan.json",
                "--inputs", tmp_path / "in.npz")
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stderr


@pytest.mark.parametrize(("arrays", "said"), [
    ({"x": np.zeros((4, 8), np.float32)}, "no array for model input 'shape'"),
    ({"x": np.zeros((4, 8), np.float32), "shape": np.array([-1, 3], np.int32)}, "has dtype int32, the model expects int64"),
    ({"x": np.zeros((4, 8, 1), np.float32), "shape": np.array([-1, 3], np.int64)}, "has shape (4, 8, 1)"),
])
def test_bad_inputs_files_get_one_line(run_spa: Callable[..., Any], tmp_path: Path, arrays: dict[str, np.ndarray],
                                       said: str) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(reshape_by_input(), str(src))
    np.savez(tmp_path / "in.npz", **arrays)
    res = run_spa("prune", src, "--inputs", tmp_path / "in.npz")
    assert res.returncode == 1, res
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("spa: error:")]
    assert said in line and not (tmp_path / "m.pruned.onnx").exists()
