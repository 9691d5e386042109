"""Tiny Hugging Face ``transformers`` models exported to ONNX: the ``models/zoo/hf`` zoo.

Usage (with an environment that has ``transformers``; see ``models/requirements-hf.txt``)::

    /work/venvs/hf/bin/python -m models.transformers_zoo [--out models/zoo/hf] [--only hf_bert ...] [--defaults]

Every model is built from a small config (hidden 64, 2 layers, 4 heads, vocabulary 100) with
seeded random weights; nothing is downloaded. Each one is exported twice, like
``models/build_zoo.py`` does for the torch zoo:

* ``NAME.ts.onnx``: TorchScript exporter, ``dynamo=False``, opset 17, ``do_constant_folding=False``;
* ``NAME.dynamo.onnx``: dynamo exporter, ``optimize=False``, ``external_data=False``, its default opset.

Both have a dynamic batch and, for token models, a dynamic sequence length. For ``hf_bert``,
``hf_gpt2`` and ``hf_vit`` an onnxruntime-optimised variant ``NAME.ortopt.onnx`` is also written: the
``onnxruntime.transformers.optimizer`` fusions (``opt_level=1``, portable) applied to a TorchScript
export of the same weights with *eager* attention, which is the pattern those fusions match; they
introduce ``com.microsoft`` ops (Attention, EmbedLayerNormalization, SkipLayerNormalization,
BiasGelu, FastGelu).

Every file is checked with ``onnx.checker`` (full check) and must match torch in onnxruntime to
1e-4, at batch 2 and at a sequence length other than the one exported with, with a padded row
in the attention mask. ``MANIFEST.json`` records, for each file, the exporter, opset, versions
(torch, transformers, onnx, onnxscript, onnxruntime), op types, max diff and size; exports that
fail are recorded there with the reason, and the others are still written.

``--defaults`` exports every model the way most users do, with each exporter's *default* settings,
into ``models/zoo/defaults/hf``: TorchScript with ``do_constant_folding=True``, dynamo with
``optimize=True`` (everything else as above, node metadata stripped too); no ``ortopt`` variant.

The :data:`SPECS` table and :func:`feeds` need neither torch nor transformers (tests use them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

log = logging.getLogger("models.transformers_zoo")

DEFAULT_OUT = Path(__file__).resolve().parent / "zoo" / "hf"
DEFAULTS_OUT = Path(__file__).resolve().parent / "zoo" / "defaults" / "hf"
#: What ``--defaults`` changes, per exporter (recorded in each MANIFEST entry's notes).
DEFAULTS_NOTE = {"ts": "exporter defaults: do_constant_folding=True", "dynamo": "exporter defaults: optimize=True"}
TS_OPSET = 17  # as models/build_zoo.py
ATOL = 1e-4
VOCAB = 100
SEQ = 8  # sequence length of the export sample; checks use CHECK_SEQ to prove the axis is dynamic
CHECK_SEQ = 5
IMAGE = (3, 32, 32)
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class HFSpec:
    """One zoo model: which ``transformers`` classes, which config, which inputs."""

    name: str
    model_class: str
    config_class: str
    config: dict[str, Any]
    inputs: tuple[str, ...]
    what: str
    ortopt: str | None = None  # onnxruntime.transformers model_type for the fused variant

    @property
    def tokens(self) -> bool:
        return "input_ids" in self.inputs


_COMMON = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 128, "max_position_embeddings": 32, "initializer_range": 0.1}
_DECODER = {**_COMMON, "num_key_value_heads": 2, "use_cache": False, "tie_word_embeddings": False}

SPECS: dict[str, HFSpec] = {
    s.name: s
    for s in (
        HFSpec("hf_bert", "BertForSequenceClassification", "BertConfig",
               {**_COMMON, "num_labels": 3, "hidden_act": "gelu"}, ("input_ids", "attention_mask"),
               "post-norm encoder: word+position+token-type embeddings, LayerNorm, 4-head self-attention "
               "with a padding mask, GELU MLP, tanh pooler on [CLS], classifier", ortopt="bert"),
        HFSpec("hf_gpt2", "GPT2LMHeadModel", "GPT2Config",
               {"vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32,
                "use_cache": False, "initializer_range": 0.1}, ("input_ids", "attention_mask"),
               "pre-norm causal decoder: fused QKV Conv1D (Gemm) split in three, gelu_new (tanh), "
               "LM head tied to the token embedding", ortopt="gpt2"),
        HFSpec("hf_llama", "LlamaForCausalLM", "LlamaConfig", dict(_DECODER), ("input_ids", "attention_mask"),
               "pre-norm causal decoder: RMSNorm, rotary embeddings, grouped-query attention "
               "(4 query heads, 2 KV heads), SwiGLU MLP (gate and up projections), untied LM head"),
        HFSpec("hf_qwen2", "Qwen2ForCausalLM", "Qwen2Config", dict(_DECODER), ("input_ids", "attention_mask"),
               "as hf_llama, with biases on the Q/K/V projections"),
        HFSpec("hf_vit", "ViTForImageClassification", "ViTConfig",
               {k: v for k, v in _COMMON.items() if k not in ("vocab_size", "max_position_embeddings")}
               | {"image_size": IMAGE[1], "patch_size": 8, "num_channels": IMAGE[0], "num_labels": 10},
               ("pixel_values",),
               "pre-norm encoder: 8x8 patch Conv, class token (Concat on the sequence axis), learned "
               "position embedding, 4-head self-attention, GELU MLP, classifier on the class token", ortopt="vit"),
    )
}


def feeds(spec: HFSpec, batch: int = 2, seq: int = CHECK_SEQ, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid inputs: token ids in ``[0, vocab)``, a 0/1 attention mask whose last row is padded
    (the first half of it attends), images ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in spec.inputs:
        if name == "input_ids":
            out[name] = rng.integers(0, VOCAB, size=(batch, seq)).astype(np.int64)
        elif name == "attention_mask":
            mask = np.ones((batch, seq), dtype=np.int64)
            mask[-1, max(1, seq // 2):] = 0
            out[name] = mask
        elif name == "pixel_values":
            out[name] = rng.standard_normal((batch, *IMAGE)).astype(np.float32)
        else:
            raise KeyError(name)
    return out


@dataclass
class ExportInfo:
    """One MANIFEST entry."""

    file: str
    model: str
    model_class: str
    exporter: str
    opset: int
    attention: str
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    versions: dict[str, str]
    config: dict[str, Any]
    file_size: int = 0
    params: int = 0
    op_types: list[str] = field(default_factory=list)
    max_abs_diff: float = 0.0
    sha256: str = ""
    notes: str = ""


# ---------------------------------------------------------------------------
# building (torch and transformers imported here only)
# ---------------------------------------------------------------------------


def _import_transformers() -> Any:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a torchvision built for another torch breaks `import transformers`
        # transformers imports torchvision whenever it finds it; none of these models needs it.
        for k in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[k]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # find_spec() -> None
    import transformers

    return transformers


def _randomise(model: Any, seed: int) -> None:
    """Distinct seeded values for every 1-D parameter (norm scales, biases).

    transformers initialises them to exactly 1 and 0; the TorchScript exporter then stores equal
    tensors once and shares them between layers, which would couple unrelated layers.
    """
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim != 1:
                continue
            noise = 0.1 * torch.randn(p.shape, generator=g)
            is_scale = name.endswith("weight") and ("norm" in name.lower() or ".ln_" in name)
            p.copy_(1.0 + noise if is_scale else noise)


def build_model(spec: HFSpec, attention: str = "sdpa", seed: int = 0) -> Any:
    """The torch module (eval mode) whose ``forward(*inputs)`` returns the logits tensor."""
    import torch

    tf = _import_transformers()
    torch.manual_seed(seed)
    config = getattr(tf, spec.config_class)(**spec.config, attn_implementation=attention)
    inner = getattr(tf, spec.model_class)(config)
    _randomise(inner, seed)
    return _logits_only(inner, spec.inputs).eval()


def _wrapper_class() -> type:
    import torch

    class LogitsOnly(torch.nn.Module):
        """``forward(*inputs)`` -> the first output (``logits``), without a KV cache."""

        def __init__(self, inner: torch.nn.Module, names: tuple[str, ...]) -> None:
            super().__init__()
            self.inner, self.names = inner, names

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            kwargs = dict(zip(self.names, args))
            if "input_ids" in self.names:
                kwargs["use_cache"] = False
            return self.inner(**kwargs, return_dict=False)[0]

    return LogitsOnly


def _logits_only(inner: Any, names: tuple[str, ...]) -> Any:
    return _wrapper_class()(inner, names)


def _sample(spec: HFSpec) -> tuple[Any, ...]:
    import torch

    return tuple(torch.from_numpy(v) for v in feeds(spec, batch=2, seq=SEQ, seed=1).values())


def _dynamic_axes(spec: HFSpec, output_rank: int) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {n: ({0: "batch", 1: "seq"} if spec.tokens else {0: "batch"}) for n in spec.inputs}
    axes[OUTPUT_NAME] = {0: "batch", 1: "seq"} if output_rank == 3 else {0: "batch"}
    return axes


def export_ts(spec: HFSpec, model: Any, path: Path, defaults: bool = False) -> None:
    """TorchScript export; ``defaults``: constant folding on, as ``torch.onnx.export`` does by default."""
    import torch

    sample = _sample(spec)
    with torch.no_grad():
        rank = model(*sample).ndim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, sample, str(path), dynamo=False, opset_version=TS_OPSET, do_constant_folding=defaults,
            training=torch.onnx.TrainingMode.EVAL, input_names=list(spec.inputs), output_names=[OUTPUT_NAME],
            dynamic_axes=_dynamic_axes(spec, rank),
        )


def export_dynamo(spec: HFSpec, model: Any, path: Path, defaults: bool = False) -> str:
    """Export with the dynamo exporter (``defaults``: its ONNX optimizer on, as by default); returns
    a note, saying so when it fell back to static sizes."""
    import torch

    sample = _sample(spec)
    batch = torch.export.Dim("batch", min=1, max=64)
    seq = torch.export.Dim("seq", min=2, max=32)

    def run(dynamic: bool) -> None:
        shapes = None
        if dynamic:
            # one entry for forward's single ``*args`` parameter: a tuple with one dict per input
            shapes = (tuple({0: batch, 1: seq} if spec.tokens else {0: batch} for _ in spec.inputs),)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, sample, dynamo=True, optimize=defaults, verbose=False, external_data=False,
                input_names=list(spec.inputs), output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
            )
        assert program is not None
        program.save(str(path), external_data=False)
        _strip_node_metadata(path)

    try:
        run(True)
        return "node metadata_props (stack traces) removed"
    except Exception as exc:  # noqa: BLE001 - record and fall back to static sizes
        log.warning("dynamo export with dynamic sizes failed for %s (%s); using static sizes", path.name, exc)
        run(False)
        return f"static sizes: dynamic export failed ({str(exc).splitlines()[0][:200]}); node metadata_props removed"


def _strip_node_metadata(path: Path) -> None:
    """Drop the per-node ``metadata_props`` (source stack traces, module names): they are more
    than half of a small dynamo export and mean nothing to a pruner."""
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
    onnx.save(proto, str(path))


def export_ortopt(spec: HFSpec, path: Path, seed: int = 0) -> Any:
    """The onnxruntime-fused variant; returns the (eager-attention) torch module it reproduces."""
    from onnxruntime.transformers.optimizer import optimize_model

    assert spec.ortopt is not None
    model = build_model(spec, attention="eager", seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "eager.ts.onnx"
        export_ts(spec, model, src)
        hidden = int(spec.config.get("hidden_size", spec.config.get("n_embd", 0)))
        heads = int(spec.config.get("num_attention_heads", spec.config.get("n_head", 0)))
        logging.getLogger("onnxruntime").setLevel(logging.WARNING)
        opt = optimize_model(str(src), model_type=spec.ortopt, num_heads=heads, hidden_size=hidden, opt_level=1)
        opt.save_model_to_file(str(path), use_external_data_format=False)
    return model


# ---------------------------------------------------------------------------
# verification and the manifest
# ---------------------------------------------------------------------------


def op_types(proto: onnx.ModelProto) -> list[str]:
    """Sorted op types; ``domain::Op`` outside the default domain."""
    return sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in proto.graph.node})


def _io(values: Any) -> dict[str, list[int | str]]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def verify(spec: HFSpec, path: Path, model: Any, info: ExportInfo) -> ExportInfo:
    """Full checker, then onnxruntime vs torch at batch 2 and sequence ``CHECK_SEQ`` (a padded
    mask row included); fills in the measured fields of ``info``."""
    import onnxruntime as ort
    import torch

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if names != list(spec.inputs):
        raise RuntimeError(f"{path.name}: inputs {names}, expected {list(spec.inputs)}")
    dynamic = not info.notes.startswith("static")
    x = feeds(spec, batch=2, seq=CHECK_SEQ if dynamic else SEQ, seed=2)
    (got,) = sess.run([OUTPUT_NAME], x)
    with torch.no_grad():
        want = model(*(torch.from_numpy(v) for v in x.values())).numpy()
    if got.shape != want.shape:
        raise RuntimeError(f"{path.name}: output shape {got.shape} != torch {want.shape}")
    diff = float(np.max(np.abs(got - want)))
    if not diff < ATOL:
        raise RuntimeError(f"{path.name}: max abs diff {diff:.3e} >= {ATOL}")
    data = path.read_bytes()
    info.file_size = len(data)
    info.sha256 = hashlib.sha256(data).hexdigest()
    info.op_types = op_types(proto)
    info.max_abs_diff = diff
    info.params = int(sum(np.prod(t.dims) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT))
    info.inputs, info.outputs = _io(proto.graph.input), _io(proto.graph.output)
    info.opset = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    return info


def _versions() -> dict[str, str]:
    import onnxruntime
    import onnxscript
    import torch

    tf = _import_transformers()
    return {"torch": torch.__version__, "transformers": tf.__version__, "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}


def build_one(spec: HFSpec, out: Path, versions: dict[str, str],
              defaults: bool = False) -> tuple[list[ExportInfo], dict[str, str]]:
    """Every file of one model (``defaults``: with the exporters' default settings, no ``ortopt``);
    returns the verified infos and ``{file: why it failed}``."""
    infos: list[ExportInfo] = []
    failures: dict[str, str] = {}
    jobs = [("ts", "torchscript"), ("dynamo", "dynamo")]
    if spec.ortopt and not defaults:
        jobs.append(("ortopt", "torchscript+ort-optimizer"))
    for suffix, exporter in jobs:
        fname = f"{spec.name}.{suffix}.onnx"
        path = out / fname
        log.info("exporting %s", fname)
        info = ExportInfo(fname, spec.name, spec.model_class, exporter, 0, "eager" if suffix == "ortopt" else "sdpa",
                          {}, {}, versions, spec.config)
        try:
            if suffix == "ortopt":
                model = export_ortopt(spec, path)
                info.notes = f"onnxruntime.transformers.optimizer model_type={spec.ortopt} opt_level=1"
            else:
                model = build_model(spec)
                if suffix == "ts":
                    export_ts(spec, model, path, defaults)
                else:
                    info.notes = export_dynamo(spec, model, path, defaults)
                if defaults:  # after export_dynamo's note: verify() reads its "static" prefix
                    info.notes = "; ".join(n for n in (info.notes, DEFAULTS_NOTE[suffix]) if n)
            infos.append(verify(spec, path, model, info))
        except Exception as exc:  # noqa: BLE001 - record why, keep going
            log.exception("FAILED %s", fname)
            failures[fname] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            path.unlink(missing_ok=True)
    return infos, failures


def write_manifest(out: Path, infos: list[ExportInfo], failures: dict[str, str], defaults: bool = False) -> None:
    path = out / "MANIFEST.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    files: dict[str, Any] = old.get("files", {})
    failed: dict[str, str] = {k: v for k, v in old.get("failed", {}).items() if k not in {i.file for i in infos}}
    for i in infos:
        files[i.file] = {k: v for k, v in asdict(i).items() if k != "file"}
    failed.update(failures)
    files = {k: files[k] for k in sorted(files) if (out / k).exists() and k not in failures}
    flag = " --defaults" if defaults else ""
    manifest: dict[str, Any] = {"generator": f"python -m models.transformers_zoo{flag} (needs models/requirements-hf.txt)"}
    if defaults:
        manifest["settings"] = "exporter defaults"  # as models/zoo/defaults/*; each entry's notes say which
    manifest |= {"output": OUTPUT_NAME, "files": files, "failed": dict(sorted(failed.items()))}
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %s (%d files, %d failed)", path, len(files), len(failed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: models/zoo/hf, or models/zoo/defaults/hf with --defaults)")
    parser.add_argument("--defaults", action="store_true",
                        help="export with each exporter's default settings (constant folding, optimizer), no ortopt")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(SPECS), help="a subset of the models")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("torch", "onnxscript", "onnx_ir", "transformers", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    out: Path = args.out or (DEFAULTS_OUT if args.defaults else DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    versions = _versions()
    infos: list[ExportInfo] = []
    failures: dict[str, str] = {}
    for name in args.only or list(SPECS):
        i, f = build_one(SPECS[name], out, versions, args.defaults)
        infos += i
        failures.update(f)
    write_manifest(out, infos, failures, args.defaults)
    for i in infos:
        log.info("%-26s %-26s opset %2d %7.1f KiB  maxdiff %.1e", i.file, i.exporter, i.opset, i.file_size / 1024,
                 i.max_abs_diff)
    for f, why in failures.items():
        log.warning("%s failed: %s", f, why)
    return 0


if __name__ == "__main__":
    sys.exit(main())
