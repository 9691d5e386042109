"""Transformer-sized ONNX models built directly with ``onnx.helper`` and numpy, for the scale benchmarks.

Three architectures, with random weights generated tensor by tensor:

* :func:`vit` - ViT-B/16-shaped image classifier (patch Conv, class token, pre-LN encoder, head);
* :func:`bert` - BERT-base-shaped encoder (word/position/type embeddings, attention mask, post-LN,
  pooler);
* :func:`decoder` - GPT-style decoder-only language model (pre-LN, causal mask, untied LM head),
  from 125 M to more than 1 B parameters.

Attention is written as exporters emit it after constant folding: ``MatMul(x, W) + b`` per
projection, ``Reshape`` to ``[0, 0, heads, head_dim]``, ``Transpose``, scaled ``MatMul``,
``Softmax``; GELU is the ``Erf`` form. Batch (and sequence) axes are dynamic.

With ``external_data=True`` every tensor over 1 KiB goes to ``<model>.data`` as soon as it is
generated: nothing holds more than one weight tensor at a time, so a 4 GB model is built in a
few hundred MB. Without it the weights are inline (a model must then stay under 2 GiB).

    python -m benchmarks.scale_models decoder /tmp/gpt1b.onnx --d-model 2048 --layers 18
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
EXTERNAL_THRESHOLD = 1024  # bytes; smaller tensors stay inline
ALIGN = 4096  # offsets of external tensors are page-aligned (onnxruntime can map them)


class Weights:
    """Makes initializers one at a time: random, filled or given; big ones streamed to a data file."""

    def __init__(self, model_path: Path, external_data: bool, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors: list[TensorProto] = []
        self.count = 0  # float elements
        self.data_name = model_path.name + ".data"
        self.file = open(model_path.with_name(self.data_name), "wb") if external_data else None  # noqa: SIM115

    def add(self, name: str, array: np.ndarray) -> str:
        if not array.flags.c_contiguous:
            array = array.copy()  # (np.ascontiguousarray would turn a scalar into shape [1])
        if array.dtype.kind == "f":
            self.count += array.size
        if self.file is None or array.nbytes <= EXTERNAL_THRESHOLD:
            self.tensors.append(numpy_helper.from_array(array, name))
            return name
        offset = self.file.tell()
        pad = -offset % ALIGN
        if pad:
            self.file.write(b"\0" * pad)
            offset += pad
        self.file.write(memoryview(array).cast("B"))
        t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.data_name), ("offset", str(offset)), ("length", str(array.nbytes))):
            t.external_data.add(key=k, value=v)
        self.tensors.append(t)
        return name

    def normal(self, name: str, shape: Sequence[int], std: float = 0.02) -> str:
        a = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        a *= np.float32(std)
        return self.add(name, a)

    def const(self, name: str, shape: Sequence[int], value: float) -> str:
        return self.add(name, np.full(tuple(shape), value, dtype=np.float32))

    def ints(self, name: str, values: Sequence[int]) -> str:
        return self.add(name, np.asarray(values, dtype=np.int64))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@dataclass
class Built:
    path: Path
    params: int
    nodes: int
    bytes_on_disk: int


class GraphBuilder:
    """Nodes with unique names; ``op`` returns the output name."""

    def __init__(self, weights: Weights) -> None:
        self.w = weights
        self.nodes: list[onnx.NodeProto] = []
        self.k = 0
        self._shared: set[str] = set()

    def op(self, op_type: str, inputs: Sequence[str], prefix: str, **attrs: object) -> str:
        self.k += 1
        name = f"{prefix}/{op_type}_{self.k}"
        out = name + ":0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def linear(self, x: str, d_in: int, d_out: int, prefix: str) -> str:
        w = self.w.normal(f"{prefix}.weight", (d_in, d_out), std=1.0 / math.sqrt(d_in))
        b = self.w.const(f"{prefix}.bias", (d_out,), 0.01)
        return self.op("Add", [self.op("MatMul", [x, w], prefix), b], prefix)

    def layer_norm(self, x: str, d: int, prefix: str) -> str:
        g = self.w.const(f"{prefix}.weight", (d,), 1.0)
        b = self.w.const(f"{prefix}.bias", (d,), 0.0)
        return self.op("LayerNormalization", [x, g, b], prefix, axis=-1, epsilon=1e-5)

    def gelu(self, x: str, prefix: str) -> str:
        c = self.shared("gelu.sqrt2", np.array(math.sqrt(2.0), np.float32))
        one = self.shared("gelu.one", np.array(1.0, np.float32))
        half = self.shared("gelu.half", np.array(0.5, np.float32))
        e = self.op("Erf", [self.op("Div", [x, c], prefix)], prefix)
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, one], prefix)], prefix), half], prefix)

    def shared(self, name: str, value: np.ndarray) -> str:
        """A small constant made once and read by every node that asks for ``name``."""
        if name not in self._shared:
            self.w.add(name, value)
            self._shared.add(name)
        return name

    def attention(self, x: str, d: int, heads: int, prefix: str, mask: str | None) -> str:
        dh = d // heads
        split = self.shared(f"shape.heads{heads}x{dh}", np.array([0, 0, heads, dh], np.int64))
        merge = self.shared(f"shape.merge{d}", np.array([0, 0, d], np.int64))
        q = self.op("Transpose", [self.op("Reshape", [self.linear(x, d, d, f"{prefix}.q"), split], prefix)], prefix,
                    perm=[0, 2, 1, 3])
        k = self.op("Transpose", [self.op("Reshape", [self.linear(x, d, d, f"{prefix}.k"), split], prefix)], prefix,
                    perm=[0, 2, 3, 1])
        v = self.op("Transpose", [self.op("Reshape", [self.linear(x, d, d, f"{prefix}.v"), split], prefix)], prefix,
                    perm=[0, 2, 1, 3])
        scale = self.shared(f"attn.scale{dh}", np.array(1.0 / math.sqrt(dh), np.float32))
        s = self.op("Mul", [self.op("MatMul", [q, k], prefix), scale], prefix)
        if mask is not None:
            s = self.op("Add", [s, mask], prefix)
        p = self.op("Softmax", [s], prefix, axis=-1)
        c = self.op("Transpose", [self.op("MatMul", [p, v], prefix)], prefix, perm=[0, 2, 1, 3])
        return self.linear(self.op("Reshape", [c, merge], prefix), d, d, f"{prefix}.o")

    def mlp(self, x: str, d: int, hidden: int, prefix: str) -> str:
        return self.linear(self.gelu(self.linear(x, d, hidden, f"{prefix}.fc1"), prefix), hidden, d, f"{prefix}.fc2")

    def finish(self, path: Path, name: str, inputs: list[onnx.ValueInfoProto],
               outputs: list[onnx.ValueInfoProto]) -> Built:
        self.w.close()
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.w.tensors)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="spa-benchmarks")
        model.ir_version = 8
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(model.SerializeToString())
        os.replace(tmp, path)
        size = path.stat().st_size
        data = path.with_name(self.w.data_name)
        if self.w.file is not None:
            size += data.stat().st_size
        elif data.exists():
            data.unlink()
        return Built(path, self.w.count, len(self.nodes), size)


def _pre_ln_block(b: GraphBuilder, h: str, d: int, heads: int, prefix: str, mask: str | None) -> str:
    h = b.op("Add", [h, b.attention(b.layer_norm(h, d, f"{prefix}.ln1"), d, heads, f"{prefix}.attn", mask)], prefix)
    return b.op("Add", [h, b.mlp(b.layer_norm(h, d, f"{prefix}.ln2"), d, 4 * d, f"{prefix}.mlp")], prefix)


def _seq_len(b: GraphBuilder, ids: str) -> str:
    """``[seq]``: axis 1 of the token ids, as a 1-element int64 tensor."""
    return b.op("Shape", [ids], "seq", start=1, end=2)


def decoder(path: str | os.PathLike[str], *, d_model: int = 768, layers: int = 12, heads: int | None = None,
            vocab: int = 32000, max_positions: int = 2048, external_data: bool = True, seed: int = 0) -> Built:
    """A GPT-style decoder: token + position embeddings, ``layers`` pre-LN blocks with a causal
    mask, a final LayerNorm and an untied LM head. Input ``input_ids`` [batch, seq] (int64)."""
    p = Path(path)
    heads = heads or d_model // 64
    b = GraphBuilder(Weights(p, external_data, seed))
    tok = b.w.normal("wte", (vocab, d_model))
    pos = b.w.normal("wpe", (max_positions, d_model), std=0.01)
    causal = np.triu(np.full((max_positions, max_positions), -1e4, np.float32), k=1)
    mask_all = b.w.add("causal_mask", causal)
    del causal
    seq = _seq_len(b, "input_ids")
    zero, zero2 = b.w.ints("zero1", [0]), b.w.ints("zero2", [0, 0])
    ends = b.op("Concat", [seq, seq], "mask", axis=0)
    mask = b.op("Slice", [mask_all, zero2, ends], "mask")
    h = b.op("Add", [b.op("Gather", [tok, "input_ids"], "embed"), b.op("Slice", [pos, zero, seq, zero], "embed")],
             "embed")
    for i in range(layers):
        h = _pre_ln_block(b, h, d_model, heads, f"h{i}", mask)
    logits = b.op("MatMul", [b.layer_norm(h, d_model, "ln_f"), b.w.normal("lm_head", (d_model, vocab))], "lm_head")
    b.nodes[-1].output[0] = "logits"
    del logits
    return b.finish(p, "decoder", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])])


def bert(path: str | os.PathLike[str], *, d_model: int = 768, layers: int = 12, heads: int = 12, vocab: int = 30522,
         max_positions: int = 512, external_data: bool = False, seed: int = 0) -> Built:
    """A BERT-base-shaped encoder: inputs ``input_ids`` and ``attention_mask`` [batch, seq]
    (int64); outputs the last hidden state and the pooled (Tanh) first token."""
    p = Path(path)
    b = GraphBuilder(Weights(p, external_data, seed))
    seq = _seq_len(b, "input_ids")
    zero = b.w.ints("zero1", [0])
    emb = b.op("Add", [b.op("Gather", [b.w.normal("word_embeddings", (vocab, d_model)), "input_ids"], "embed"),
                       b.op("Slice", [b.w.normal("position_embeddings", (max_positions, d_model)), zero, seq, zero],
                            "embed")], "embed")
    emb = b.op("Add", [emb, b.w.normal("token_type_embedding", (d_model,))], "embed")
    h = b.layer_norm(emb, d_model, "embed.ln")
    m = b.op("Cast", ["attention_mask"], "mask", to=TensorProto.FLOAT)
    m = b.op("Unsqueeze", [m, b.w.ints("axes12", [1, 2])], "mask")
    one = b.shared("mask.one", np.array(1.0, np.float32))
    big = b.shared("mask.big", np.array(-1e4, np.float32))
    mask = b.op("Mul", [b.op("Sub", [one, m], "mask"), big], "mask")
    for i in range(layers):
        pre = f"layer{i}"
        h = b.layer_norm(b.op("Add", [h, b.attention(h, d_model, heads, f"{pre}.attn", mask)], pre), d_model,
                         f"{pre}.ln1")
        h = b.layer_norm(b.op("Add", [h, b.mlp(h, d_model, 4 * d_model, f"{pre}.mlp")], pre), d_model, f"{pre}.ln2")
    b.nodes[-1].output[0] = "last_hidden_state"
    first = b.op("Gather", ["last_hidden_state", b.shared("first_index", np.array(0, np.int64))], "pooler", axis=1)
    pooled = b.op("Tanh", [b.linear(first, d_model, d_model, "pooler.dense")], "pooler")
    b.nodes[-1].output[0] = "pooler_output"
    del pooled
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", d_model]),
            helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch", d_model])]
    return b.finish(p, "bert", ids, outs)


def vit(path: str | os.PathLike[str], *, image: int = 224, patch: int = 16, d_model: int = 768, layers: int = 12,
        heads: int = 12, classes: int = 1000, external_data: bool = False, seed: int = 0) -> Built:
    """A ViT-B/16-shaped classifier: input ``input`` [batch, 3, image, image], output ``logits``."""
    p = Path(path)
    b = GraphBuilder(Weights(p, external_data, seed))
    n = (image // patch) ** 2
    x = b.op("Conv", ["input", b.w.normal("patch.weight", (d_model, 3, patch, patch)),
                      b.w.const("patch.bias", (d_model,), 0.0)], "patch", kernel_shape=[patch, patch],
             strides=[patch, patch])
    x = b.op("Transpose", [b.op("Reshape", [x, b.w.ints("shape.flat", [0, d_model, -1])], "patch")], "patch",
             perm=[0, 2, 1])
    batch = b.op("Shape", ["input"], "cls", start=0, end=1)
    cls_shape = b.op("Concat", [batch, b.w.ints("shape.cls", [1, d_model])], "cls", axis=0)
    cls = b.op("Expand", [b.w.normal("cls_token", (1, 1, d_model)), cls_shape], "cls")
    h = b.op("Add", [b.op("Concat", [cls, x], "embed", axis=1), b.w.normal("pos_embedding", (1, n + 1, d_model))],
             "embed")
    for i in range(layers):
        h = _pre_ln_block(b, h, d_model, heads, f"block{i}", None)
    h = b.layer_norm(h, d_model, "norm")
    first = b.op("Gather", [h, b.shared("cls_index", np.array(0, np.int64))], "head", axis=1)
    b.nodes.append(helper.make_node("Gemm", [first, b.w.normal("head.weight", (d_model, classes)),
                                             b.w.const("head.bias", (classes,), 0.0)], ["logits"], name="head/Gemm"))
    return b.finish(p, "vit", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, image, image])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])])


#: Decoder sizes of the growth table: name -> (d_model, layers).
DECODER_SIZES: dict[str, tuple[int, int]] = {
    "gpt-125m": (768, 12),
    "gpt-350m": (1024, 24),
    "gpt-760m": (1536, 24),
    "gpt-1b": (2048, 18),
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_models", description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["decoder", "bert", "vit"])
    p.add_argument("out", type=Path)
    p.add_argument("--d-model", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--external-data", action="store_true", help="weights in OUT.data (always for the decoder)")
    args = p.parse_args(argv)
    kw: dict[str, object] = {k: v for k, v in (("d_model", args.d_model), ("layers", args.layers)) if v}
    if args.kind == "decoder":
        built = decoder(args.out, **kw)  # type: ignore[arg-type]
    else:
        built = (bert if args.kind == "bert" else vit)(args.out, external_data=args.external_data, **kw)  # type: ignore[arg-type]
    print(f"{built.path}: {built.params:,} parameters, {built.nodes} nodes, {built.bytes_on_disk:,} bytes")
    return 0


if __name__ == "__main__":
    main()
