"""Large-model paths at small size: streamed saving (inline and external data), lazy external
data, checks without weight copies, the shape probe, the bounded array cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import spa
import spa.model.io
import spa.rewrite
from benchmarks.scale_models import bert, decoder, vit
from spa.errors import ModelLoadError, OutputError, RewriteError
from spa.model.graph import ModelContext
from spa.model.io import load_model, save_model, write_external, write_inline
from spa.model.runtime import make_session, random_inputs, run
from spa.model.shapes import ShapeProbe

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-style decoder whose weights are in external data."""
    path = tmp_path_factory.mktemp("dec") / "dec.onnx"
    built = decoder(path, d_model=128, layers=2, vocab=500, max_positions=64)
    assert built.params > 500_000 and (path.parent / "dec.onnx.data").stat().st_size > 2_000_000
    return path


def _arrays(m: onnx.ModelProto, base: Path | None = None) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t, str(base) if base else "") for t in m.graph.initializer}


def test_write_inline_parses_to_the_same_model(tmp_path: Path) -> None:
    m = onnx.load(ZOO / "resnet_bottleneck.dynamo.onnx")
    write_inline(m, tmp_path / "m.onnx")
    assert onnx.load(tmp_path / "m.onnx").SerializeToString() == m.SerializeToString()
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    feeds = random_inputs(m)
    got = run(make_session(str(tmp_path / "m.onnx")), feeds)
    want = run(make_session(m), feeds)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_external_data_round_trip(tmp_path: Path, tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(tiny_decoder)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    before = model.SerializeToString()
    monkeypatch.setattr(spa.model.io, "_EXTERNAL_DATA_THRESHOLD", 1 << 20)  # as if the model were over 1 GiB
    out = save_model(model, tmp_path / "copy.onnx")
    assert model.SerializeToString() == before  # the model saved is not changed
    data = tmp_path / "copy.onnx.data"
    assert data.stat().st_size > out.stat().st_size * 20
    light = onnx.load(out, load_external_data=False)
    offsets = [int(e.value) for t in light.graph.initializer for e in t.external_data if e.key == "offset"]
    assert len(offsets) > 10 and all(o % 4096 == 0 for o in offsets)
    back = onnx.load(out)
    assert _arrays(back).keys() == _arrays(model).keys()
    assert all(np.array_equal(a, _arrays(model)[k]) for k, a in _arrays(back).items())
    back.graph.ClearField("initializer")
    model.graph.ClearField("initializer")
    assert back.SerializeToString() == model.SerializeToString()
    assert not list(tmp_path.glob(".spa-*"))


def test_pruned_external_data_model_round_trips(tmp_path: Path, tiny_decoder: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pruned, _, report = spa.prune(tiny_decoder, ratio=0.4)
    assert report.groups_pruned >= 2 and report.after.params < report.before.params
    monkeypatch.setattr(spa.model.io, "_EXTERNAL_DATA_THRESHOLD", 1 << 16)
    out = save_model(pruned, tmp_path / "p.onnx")
    assert (tmp_path / "p.onnx.data").exists()
    feeds = {"input_ids": np.arange(10, dtype=np.int64).reshape(2, 5)}
    got = run(make_session(str(out)), feeds)
    want = run(make_session(pruned), feeds)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)


def test_lazy_load_keeps_references_and_finds_missing_data(tmp_path: Path, tiny_decoder: Path) -> None:
    light = load_model(tiny_decoder, external_data=False)
    assert sum(t.data_location == onnx.TensorProto.EXTERNAL for t in light.graph.initializer) > 10
    with pytest.raises(OutputError, match="not loaded"):
        write_external(light, tmp_path / "x.onnx", "x.onnx.data")
    (tmp_path / "m.onnx").write_bytes(tiny_decoder.read_bytes())  # without its .data file
    for external in (True, False):
        with pytest.raises(ModelLoadError, match="external data"):
            load_model(tmp_path / "m.onnx", external_data=external)


@pytest.mark.parametrize("name", ["resnet_basic.ts.onnx", "densenet_block.dynamo.onnx", "misc_ops.ts.onnx"])
def test_check_without_weight_copies_accepts_what_the_full_check_accepts(name: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pruned, _, _ = spa.prune(ZOO / name, ratio=0.5)
    monkeypatch.setattr(spa.rewrite, "LARGE_MODEL_BYTES", 0)
    spa.rewrite.check_valid(pruned, None)
    again, _, _ = spa.prune(ZOO / name, ratio=0.5)  # the whole pipeline on the large-model path
    assert again.SerializeToString() == pruned.SerializeToString()


def test_check_without_weight_copies_refuses_a_broken_model(monkeypatch: pytest.MonkeyPatch) -> None:
    pruned, _, _ = spa.prune(ZOO / "vgg_bn.ts.onnx", ratio=0.5)
    conv = next(t for t in pruned.graph.initializer if len(t.dims) == 4)
    conv.CopyFrom(numpy_helper.from_array(np.zeros([d + 1 for d in conv.dims], np.float32), conv.name))
    monkeypatch.setattr(spa.rewrite, "LARGE_MODEL_BYTES", 0)
    with pytest.raises(RewriteError):
        spa.rewrite.check_valid(pruned, None)


def test_shape_probe_sees_real_shapes_without_weights() -> None:
    m = load_model(ZOO / "resnet_bottleneck.ts.onnx")
    inner = [n.output[0] for n in m.graph.node if n.op_type in ("Conv", "Add")]
    feeds = random_inputs(m, batch=2)
    probe = run(ShapeProbe(m, inner), feeds)
    sess_model = onnx.ModelProto()
    sess_model.CopyFrom(m)
    sess_model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in inner)
    real = run(make_session(sess_model), feeds)
    assert {k: v.shape for k, v in probe.items()} == {k: v.shape for k, v in real.items()}
    big = {t.name for t in m.graph.initializer if np.prod(t.dims) > 1024}
    assert set(ShapeProbe(m, []).zeros) == big and big  # the weights were fed as zeros, not stored


def test_array_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import spa.model.graph

    m = load_model(ZOO / "vgg_bn.ts.onnx")
    ctx = ModelContext.build(m)
    monkeypatch.setattr(spa.model.graph, "ARRAY_CACHE_BYTES", 0)
    monkeypatch.setattr(spa.model.graph, "_SMALL_ARRAY_BYTES", 1024)
    big = [t.name for t in m.graph.initializer if numpy_helper.to_array(t).nbytes > 1024]
    small = [t.name for t in m.graph.initializer if numpy_helper.to_array(t).nbytes <= 1024]
    for name in big + small:
        a = ctx.array(name)
        assert np.array_equal(a, numpy_helper.to_array(ctx.initializers[name])) and not a.flags.writeable
    assert set(ctx._arrays) == set(small)


def test_prune_from_a_path_works_in_place(tmp_path: Path) -> None:
    a = spa.analyze(ZOO / "se_block.ts.onnx", in_place=True)
    assert a.original is None
    assert spa.analyze(ZOO / "se_block.ts.onnx").original is not None
    _, _, report = spa.prune(ZOO / "se_block.ts.onnx", ratio=0.3, verify_result=True)
    assert report.verification is not None and report.verification.passed


@pytest.mark.parametrize("build,kw", [(bert, {"d_model": 64, "layers": 2, "heads": 4, "vocab": 100}),
                                      (vit, {"image": 32, "d_model": 64, "layers": 2, "heads": 4, "classes": 10})])
def test_benchmark_builders_make_valid_prunable_models(tmp_path: Path, build, kw) -> None:  # noqa: ANN001
    built = build(tmp_path / "m.onnx", **kw)
    onnx.checker.check_model(str(built.path), full_check=True)
    _, _, report = spa.prune(built.path, ratio=0.4)
    assert report.groups_pruned >= 2 and report.after.macs < report.before.macs


def test_sessions_of_models_past_the_protobuf_limit(tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions (verification, gates, sweeps) of a model too large to serialize use external data."""
    import spa.model.runtime

    model = load_model(tiny_decoder)
    feeds = random_inputs(model, seed=1)
    want = run(make_session(model), feeds)
    written: list[Path] = []

    def spy(m: onnx.ModelProto, path: Path, data_name: str) -> None:
        written.append(Path(path))
        write_external(m, path, data_name)

    monkeypatch.setattr(spa.model.runtime, "INLINE_LIMIT", 1 << 20)  # as if the model were over 2 GiB
    monkeypatch.setattr(spa.model.runtime, "write_external", spy)  # the name make_session calls
    got = run(make_session(model), feeds)
    assert len(written) == 1 and not written[0].parent.exists()  # the temporary folder is gone
    assert all(np.array_equal(got[k], want[k]) for k in want)
    pruned, plan, _ = spa.prune(model, 0.4)
    v = spa.verify_models(model, pruned, plan)
    assert v.passed and len(written) >= 3
