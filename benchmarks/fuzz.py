"""A seeded mutator of ONNX files, and a runner that checks how ``spa`` ends on each mutant.

Each mutation takes a valid model and breaks one thing, the way a damaged download, a hand
edit or a buggy exporter would: bytes (truncation, flipped bytes), tensors (raw data shorter than
the dims, wrong, huge or negative dims), the graph (a deleted node input, a swapped op type, a
cycle, an input renamed to nothing) or the opset (7, 99). Every mutant is deterministic in
``(source, kind, seed)``.

The property checked on each run (:func:`check_run`): exit 0, 1 or 2 only; on exit 1 or 2 exactly
one ``spa: error:`` (or usage) line; never a traceback, never "bug in SPA"; the input file
untouched; and no file left behind but a complete output on exit 0. ``python -m
benchmarks.fuzz --count 680`` runs a large campaign over the zoo and prints what broke.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"


# ---- mutations ---------------------------------------------------------------------------


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(1, max(2, len(data))))]


def _flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    arr = bytearray(data)
    for pos in rng.integers(0, len(arr), size=int(rng.integers(1, 9))):
        arr[int(pos)] ^= int(rng.integers(1, 256))
    return bytes(arr)


def _tensor(model: onnx.ModelProto, rng: np.random.Generator, raw: bool = False) -> onnx.TensorProto | None:
    inits = [t for t in model.graph.initializer if (t.HasField("raw_data") or not raw) and t.dims]
    return inits[int(rng.integers(len(inits)))] if inits else None


def _short_raw_data(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    t = _tensor(model, rng, raw=True)
    if t is not None:
        t.raw_data = t.raw_data[: int(rng.integers(0, max(1, len(t.raw_data))))]


def _wrong_dim(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    t = _tensor(model, rng)
    if t is not None:
        k = int(rng.integers(len(t.dims)))
        t.dims[k] = int(t.dims[k]) + int(rng.integers(1, 4))


def _huge_dim(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    """A dimension of 2^40 on a tensor, a graph input or a value_info."""
    values = [*model.graph.input, *model.graph.value_info]
    t = _tensor(model, rng)
    if t is not None and rng.random() < 0.5:
        t.dims[int(rng.integers(len(t.dims)))] = 1 << 40
        return
    dims = [d for v in values for d in v.type.tensor_type.shape.dim]
    if dims:
        dims[int(rng.integers(len(dims)))].dim_value = 1 << 40


def _negative_dim(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    dims = [d for v in model.graph.input for d in v.type.tensor_type.shape.dim]
    t = _tensor(model, rng)
    if t is not None and (rng.random() < 0.5 or not dims):
        t.dims[int(rng.integers(len(t.dims)))] = -int(rng.integers(1, 5))
    elif dims:
        dims[int(rng.integers(len(dims)))].dim_value = -int(rng.integers(1, 5))


def _node(model: onnx.ModelProto, rng: np.random.Generator) -> onnx.NodeProto:
    return model.graph.node[int(rng.integers(len(model.graph.node)))]


def _delete_input(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    nodes = [n for n in model.graph.node if n.input]
    if nodes:
        node = nodes[int(rng.integers(len(nodes)))]
        del node.input[int(rng.integers(len(node.input)))]


def _dangling_input(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    """A node input that names a tensor nothing produces."""
    nodes = [n for n in model.graph.node if n.input]
    if nodes:
        node = nodes[int(rng.integers(len(nodes)))]
        node.input[int(rng.integers(len(node.input)))] = "spa_fuzz_missing"


def _swap_op_type(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    choices = ["Relu", "Conv", "Add", "MatMul", "Concat", "Reshape", "Gemm", "Transpose", "FooBar"]
    _node(model, rng).op_type = choices[int(rng.integers(len(choices)))]


def _cycle(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    """An early node reads the output of a later one."""
    nodes = [n for n in model.graph.node if n.input and n.output]
    if len(nodes) >= 2:
        i, j = sorted(int(x) for x in rng.choice(len(nodes), size=2, replace=False))
        nodes[i].input[0] = nodes[j].output[0]


def _opset(version: int) -> Callable[[onnx.ModelProto, np.random.Generator], None]:
    def set_opset(model: onnx.ModelProto, rng: np.random.Generator) -> None:
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = version

    return set_opset


def _drop_graph_output(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    del model.graph.output[:]


BYTE_MUTATIONS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "truncate": _truncate, "flip_bytes": _flip_bytes,
}
MODEL_MUTATIONS: dict[str, Callable[[onnx.ModelProto, np.random.Generator], None]] = {
    "short_raw_data": _short_raw_data, "wrong_dim": _wrong_dim, "huge_dim": _huge_dim,
    "negative_dim": _negative_dim, "delete_input": _delete_input, "dangling_input": _dangling_input,
    "swap_op_type": _swap_op_type, "cycle": _cycle, "opset7": _opset(7), "opset99": _opset(99),
    "no_outputs": _drop_graph_output,
}
KINDS = (*BYTE_MUTATIONS, *MODEL_MUTATIONS)


def mutate(source: bytes, kind: str, seed: int) -> bytes:
    """The bytes of ``source`` (a serialized model) broken by mutation ``kind``, seeded."""
    rng = np.random.default_rng(seed)
    if kind in BYTE_MUTATIONS:
        return BYTE_MUTATIONS[kind](source, rng)
    model = onnx.ModelProto.FromString(source)
    MODEL_MUTATIONS[kind](model, rng)
    return model.SerializeToString()


# ---- running -----------------------------------------------------------------------------


@dataclass
class Run:
    """One in-process run of the CLI."""

    code: int | None
    stdout: str
    stderr: str
    exception: str = ""
    seconds: float = 0.0


def run_cli(argv: list[str]) -> Run:
    """``spa ARGV`` in this process, its output captured; an exception that escapes
    :func:`spa.cli.app.main` is recorded (with its traceback text) instead of raised."""
    from spa.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    exception = ""
    code: int | None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - exactly what the fuzz run looks for
        code, exception = None, traceback.format_exc()
    finally:
        logging.getLogger().handlers.clear()  # main() installs a handler on the captured stream
    return Run(code, out.getvalue(), err.getvalue(), exception, time.perf_counter() - t0)


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_run(res: Run, folder: Path, model: Path, before: dict[str, tuple[int, int]], data: bytes,
              outputs: tuple[str, ...]) -> list[str]:
    """What is wrong with how a run ended (empty: nothing)."""
    problems = []
    if res.exception:
        problems.append("traceback: " + res.exception.strip().splitlines()[-1])
    if "Traceback" in res.stderr:
        problems.append("traceback on stderr")
    if "This is a bug in SPA" in res.stderr:
        problems.append("bug in SPA: " + next(ln for ln in res.stderr.splitlines() if "bug in SPA" in ln)[:300])
    if res.code not in (0, 1, 2):
        problems.append(f"exit code {res.code}")
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("spa: error:") or "usage error:" in ln]
    if res.code in (1, 2) and len(errors) != 1:
        problems.append(f"{len(errors)} error lines: {res.stderr[-300:]!r}")
    if not model.is_file() or model.read_bytes() != data:
        problems.append("input modified")
    after = listing(folder)
    new = sorted(set(after) - set(before))
    allowed = set(outputs) if res.code == 0 else set()
    if [n for n in new if n not in allowed]:
        problems.append(f"files left behind: {[n for n in new if n not in allowed]}")
    if any(after[k] != v for k, v in before.items() if k in after) or set(before) - set(after):
        problems.append("a file in the folder changed")
    return problems


def fuzz_one(source: Path, kind: str, seed: int, folder: Path, commands: tuple[str, ...] = ("prune",),
             criterion: str = "l1") -> list[str]:
    """Mutate ``source`` into ``folder/m.onnx``, run each command on it (``spa prune`` with
    ``criterion``), return the problems."""
    data = mutate(source.read_bytes(), kind, seed)
    model = folder / "m.onnx"
    model.write_bytes(data)
    problems: list[str] = []
    for command in commands:
        before = listing(folder)
        if command == "prune":
            argv, outputs = ["prune", str(model), "-o", str(folder / "out.onnx"), "--plan", str(folder / "p.json"),
                             "--criterion", criterion], ("out.onnx", "p.json")
        else:
            argv, outputs = [command, str(model)], ()
        res = run_cli(argv)
        problems += [f"{command}: {p}" for p in check_run(res, folder, model, before, data, outputs)]
        for name in outputs:
            (folder / name).unlink(missing_ok=True)
    model.unlink()
    return problems


def campaign(sources: list[Path], count: int, seed: int = 0, commands: tuple[str, ...] = ("prune",),
             progress: bool = False, criterion: str = "l1") -> dict[str, list[str]]:
    """``count`` mutants drawn round-robin over sources and kinds; ``case id -> problems``."""
    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="spa-fuzz-") as tmp:
        for i in range(count):
            src, kind = sources[i % len(sources)], KINDS[(i // len(sources)) % len(KINDS)]
            case = f"{src.name}:{kind}:{seed + i}"
            problems = fuzz_one(src, kind, seed + i, Path(tmp), commands, criterion)
            if problems:
                found[case] = problems
            if progress and (i + 1) % 50 == 0:
                print(f"{i + 1}/{count}: {len(found)} with problems", file=sys.stderr)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=680)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--commands", default="prune,groups", help="comma-separated spa commands to run on each mutant")
    p.add_argument("--criterion", default="l1", help="criterion of spa prune (obspa also runs onnxruntime slices)")
    args = p.parse_args(argv)
    sources = sorted(ZOO.glob("*.onnx"))
    t0 = time.perf_counter()
    found = campaign(sources, args.count, args.seed, tuple(args.commands.split(",")), progress=True,
                     criterion=args.criterion)
    kinds = Counter(c.split(":")[1] for c in found)
    print(f"{args.count} mutants, {time.perf_counter() - t0:.0f} s: {len(found)} with problems "
          f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    for case, problems in found.items():
        print(f"  {case}: {'; '.join(problems)[:400]}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
