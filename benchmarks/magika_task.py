"""The task of the model in the ``magika`` wheel: a file's content type, read from its bytes.

Magika ships one trained Keras/JAX model converted by tf2onnx (``standard_v3_3/model.onnx``:
int32 bytes ``N x 2048`` -> one-hot -> dense layers -> 214 content types). Its own library reads
the beginning, middle and end of a file into those bytes; :func:`labels` runs that library with
a model folder whose ``model.onnx`` may be a pruned one, so the pruned model sees exactly the
inputs the library feeds. The files are ones found on this machine (:func:`files_on_machine`:
documentation, configuration, Python sources, C headers, time zones, shared libraries), chosen
deterministically. :func:`agreement` is the fraction of files whose label is unchanged.

Used by ``benchmarks/real_models.py``; needs the ``magika`` package (the ``bench`` extra).
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Folders searched for files, and how many files each gives at most.
ROOTS = ("/usr/share/doc", "/etc", "/usr/lib/python3.11", "/usr/share/perl", "/usr/include", "/usr/share/zoneinfo",
         "/usr/lib/x86_64-linux-gnu", "/usr/share/man")
MIN_BYTES = 64


def model_folder() -> Path:
    """The folder of the model the installed ``magika`` uses (``model.onnx`` and its configs)."""
    import magika

    folders = sorted((Path(magika.__file__).parent / "models").glob("*/model.onnx"))
    if not folders:
        raise FileNotFoundError("the installed magika package ships no model.onnx")
    return folders[-1].parent


def files_on_machine(n: int = 600) -> list[Path]:
    """About ``n`` regular files of at least :data:`MIN_BYTES`, spread evenly over :data:`ROOTS`."""
    roots = [Path(r) for r in ROOTS if Path(r).is_dir()]
    per_root = max(1, n // max(1, len(roots)))
    out: list[Path] = []
    for root in roots:
        found = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size >= MIN_BYTES)
        step = max(1, len(found) // per_root)
        out += found[::step][:per_root]
    return out


def labels(folder: Path, files: list[Path]) -> list[str]:
    """The content type magika's library gives each file with the model in ``folder``."""
    from magika import Magika

    return [r.dl.label for r in Magika(model_dir=folder).identify_paths(files)]


def with_model(folder: Path, model: Path, into: Path) -> Path:
    """A copy of the model folder ``folder`` at ``into`` whose ``model.onnx`` is ``model``."""
    shutil.copytree(folder, into)
    shutil.copyfile(model, into / "model.onnx")
    return into


def agreement(reference: list[str], got: list[str]) -> float:
    return sum(a == b for a, b in zip(reference, got)) / len(reference) if reference else 0.0
