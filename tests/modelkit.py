"""Tiny ONNX models built in code for rule, pass and property tests, plus run helpers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import spa
import spa.pipeline.api
from spa.check.verify import mask_model

RNG = np.random.default_rng(0)


def w(*shape: int, seed: int | None = None) -> np.ndarray:
    rng = RNG if seed is None else np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32)


def model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int | str]],
    outputs: dict[str, list[int | str] | None],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked model: float32 inputs/outputs (output shape None = unknown)."""
    g = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def conv(x: str, y: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = True,
         inits: dict[str, np.ndarray] | None = None, dims: int = 2) -> onnx.NodeProto:
    """A Conv node; adds its weights to ``inits``."""
    assert inits is not None
    inits[f"{y}.w"] = w(cout, cin // group, *([k] * dims))
    ins = [x, f"{y}.w"]
    if bias:
        inits[f"{y}.b"] = w(cout)
        ins.append(f"{y}.b")
    return helper.make_node("Conv", ins, [y], name=y, group=group, pads=[k // 2] * (2 * dims))


def bn(x: str, y: str, c: int, inits: dict[str, np.ndarray]) -> onnx.NodeProto:
    inits[f"{y}.g"] = np.abs(w(c)) + 0.5
    inits[f"{y}.b"] = w(c)
    inits[f"{y}.m"] = w(c) * 0.1
    inits[f"{y}.v"] = np.abs(w(c)) + 0.5
    return helper.make_node("BatchNormalization", [x, f"{y}.g", f"{y}.b", f"{y}.m", f"{y}.v"], [y], name=y)


def run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def feeds_for(m: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    from spa.model.runtime import random_inputs

    return random_inputs(m, seed=seed, batch=2)


def assert_masked_equivalent(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: spa.Plan,
                             rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """The pruned model equals the original with the plan's removed indices zeroed."""
    feeds = feeds_for(original)
    ref = run(mask_model(original, plan), feeds)
    got = run(pruned, feeds)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol + rtol * float(np.abs(r).max()))


def prune_checked(m: onnx.ModelProto, ratio: float = 0.5, **kw: object) -> tuple[onnx.ModelProto, spa.Plan, spa.pipeline.api.Report]:
    """Prune ``m``, then assert the full checker and masked equivalence hold."""
    pruned, plan, report = spa.prune(m, ratio=ratio, **kw)  # type: ignore[arg-type]
    onnx.checker.check_model(pruned, full_check=True)
    assert_masked_equivalent(m, pruned, plan)
    return pruned, plan, report


def group_of(a: spa.Analysis, tensor: str, axis: int):  # noqa: ANN201 - returns spa.analysis.groups.Group
    return next(g for g in a.groups if (tensor, axis) in g.members)


def init_shape(m: onnx.ModelProto, name: str) -> list[int]:
    return next(list(t.dims) for t in m.graph.initializer if t.name == name)
