"""SplitToSequence + SequenceAt (the dynamo exporter's torch.split / chunk)."""

from __future__ import annotations

import numpy as np
import pytest
from modelkit import conv, group_of, model, prune_checked
from onnx import helper, numpy_helper

import spa


def _split_model(split: np.ndarray | None, positions: list[int], keepdims: int = 1):
    inits: dict = {"pos": np.array(0, np.int64)}
    inits.update({f"p{k}": np.array(k, np.int64) for k in positions})
    ins = ["a", "split"] if split is not None else ["a"]
    if split is not None:
        inits["split"] = split
    nodes = [conv("x", "a", 3, 8, inits=inits),
             helper.make_node("SplitToSequence", ins, ["seq"], axis=1, keepdims=keepdims)]
    outs = {}
    for k in positions:
        nodes.append(helper.make_node("SequenceAt", ["seq", f"p{k}"], [f"s{k}"]))
        nodes.append(helper.make_node("Relu", [f"s{k}"], [f"r{k}"]))
    return nodes, inits, outs


@pytest.mark.parametrize("split", [np.array([3, 5], np.int64), np.array(4, np.int64)])
def test_split_to_sequence_offsets_and_sizes_rewrite(split: np.ndarray) -> None:
    nodes, inits, _ = _split_model(split, [0, 1])
    sizes = [3, 5] if split.ndim else [4, 4]
    nodes += [conv("r0", "y0", sizes[0], 2, inits=inits), conv("r1", "y1", sizes[1], 2, inits=inits)]
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y0": [1, 2, 4, 4], "y1": [1, 2, 4, 4]}, inits)
    g = group_of(spa.analyze(m), "a.w", 0)
    assert g.prunable and {("y0.w", 1), ("y1.w", 1)} <= set(g.members)
    pruned, plan, _ = prune_checked(m, 0.5)
    node = next(n for n in pruned.graph.node if n.op_type == "SplitToSequence")
    new_sizes = numpy_helper.to_array(next(t for t in pruned.graph.initializer if t.name == node.input[1]))
    keep = next(s.keep for s in plan.slices if s.initializer == "a.w")
    assert new_sizes.tolist() == [sum(k < sizes[0] for k in keep), sum(k >= sizes[0] for k in keep)]


def test_sequence_read_by_other_op_blocks() -> None:
    nodes, inits, _ = _split_model(np.array([4, 4], np.int64), [0])
    nodes.append(helper.make_node("SequenceLength", ["seq"], ["n"]))
    nodes.append(conv("r0", "y0", 4, 2, inits=inits))
    m = model(nodes, {"x": [1, 3, 4, 4]}, {"y0": [1, 2, 4, 4]}, inits)
    m.graph.output.append(helper.make_tensor_value_info("n", 7, []))
    g = group_of(spa.analyze(m), "a.w", 0)
    assert not g.prunable and any("SequenceLength" in r for r in g.blocked)
