"""A Llama decoder as deployed: ``models/zoo/hf/optimum/llama_kv.onnx``.

Usage (an environment with ``optimum-onnx``, which pins ``transformers<4.58``; see
``models/requirements-optimum.txt``)::

    /work/venvs/optimum/bin/python -m models.optimum_llama [--out models/zoo/hf/optimum]

A ``LlamaForCausalLM`` from a small config (hidden 128, 2 layers, 4 query and 2 KV heads,
vocabulary 512, seeded random weights; nothing is downloaded) is saved with ``save_pretrained``
and exported by ``optimum.exporters.onnx.main_export(task="text-generation-with-past")``. The
file has optimum's interface: inputs ``input_ids``, ``attention_mask`` (length
``past_sequence_length + sequence_length``), ``position_ids`` and ``past_key_values.{0,1}.{key,value}``;
outputs ``logits`` and ``present.*``. It is checked against torch in onnxruntime at the prefill
step (empty cache) and at a decode step that feeds the prefill's cache back, to :data:`ATOL`.
``MANIFEST.json`` beside it records the config, versions, checks, size and sha256.

Tests use the committed file (``tests/test_token_inputs.py``): SPA must prune it with its default
settings and synthetic inputs, with no data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("models.optimum_llama")

DEFAULT_OUT = Path(__file__).resolve().parent / "zoo" / "hf" / "optimum"
NAME = "llama_kv.onnx"
ATOL = 1e-4
CONFIG: dict[str, Any] = {
    "vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
    "initializer_range": 0.1, "tie_word_embeddings": False,
}
PREFILL, DECODE = 5, 1  # tokens in the checks' prefill and decode steps


def _transformers() -> Any:
    # transformers imports torchvision when it is installed; a torchvision built for another torch
    # fails to import, and this model needs none of it.
    import transformers.utils.import_utils as iu

    iu._torchvision_available = False
    import transformers

    return transformers


def export(out_dir: Path, seed: int = 0) -> Path:
    """Build, save and export the model into ``out_dir``; returns the ONNX file's path."""
    import torch

    tf = _transformers()  # first: it keeps optimum's transformers off torchvision
    from optimum.exporters.onnx import main_export

    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**CONFIG)).eval()
    with tempfile.TemporaryDirectory(prefix="spa-optimum-") as tmp:
        model.save_pretrained(Path(tmp) / "hf")
        main_export(str(Path(tmp) / "hf"), output=Path(tmp) / "onnx", task="text-generation-with-past",
                    no_post_process=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / NAME
        target.write_bytes((Path(tmp) / "onnx" / "model.onnx").read_bytes())
    return target


def check(path: Path, seed: int = 0) -> dict[str, float]:
    """Max |ONNX - torch| of the logits at prefill and at a decode step fed the prefill's cache."""
    import onnxruntime as ort
    import torch

    tf = _transformers()
    from transformers.cache_utils import DynamicCache

    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**CONFIG)).eval()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, CONFIG["vocab_size"], size=(2, PREFILL + DECODE)).astype(np.int64)
    heads, dim = CONFIG["num_key_value_heads"], CONFIG["hidden_size"] // CONFIG["num_attention_heads"]
    feeds: dict[str, np.ndarray] = {f"past_key_values.{i}.{kv}": np.zeros((2, heads, 0, dim), np.float32)
                                    for i in range(CONFIG["num_hidden_layers"]) for kv in ("key", "value")}
    diffs, cache = {}, DynamicCache()
    for step, (lo, hi) in (("prefill", (0, PREFILL)), ("decode", (PREFILL, PREFILL + DECODE))):
        feeds.update(input_ids=ids[:, lo:hi], attention_mask=np.ones((2, hi), np.int64),
                     position_ids=np.broadcast_to(np.arange(lo, hi), (2, hi - lo)).astype(np.int64))
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        with torch.no_grad():
            ref = model(input_ids=torch.from_numpy(ids[:, lo:hi]), attention_mask=torch.ones(2, hi, dtype=torch.long),
                        past_key_values=cache, use_cache=True).logits.numpy()
        diffs[step] = float(np.abs(outs["logits"] - ref).max())
        feeds.update({k.replace("present", "past_key_values"): v for k, v in outs.items() if k.startswith("present")})
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from importlib import metadata

    path = export(args.out)
    diffs = check(path)
    if max(diffs.values()) > ATOL:
        log.error("%s differs from torch: %s", path, diffs)
        return 1
    data = path.read_bytes()
    versions = {d: metadata.version(d) for d in ("torch", "transformers", "optimum", "optimum-onnx", "onnx",
                                                   "onnxruntime")}
    manifest = {"generator": "python -m models.optimum_llama (needs models/requirements-optimum.txt)",
                "files": {NAME: {"model_class": "LlamaForCausalLM", "exporter": "optimum main_export",
                                 "task": "text-generation-with-past", "config": CONFIG, "versions": versions,
                                 "max_diff": diffs, "file_size": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}}}
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %s (%d bytes); max diff vs torch %s", path, len(data), diffs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
