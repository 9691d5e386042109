"""Einsum equations parsed into per-operand axis labels (``...`` expanded), shared by the Einsum
coupling rule (:mod:`spa.analysis.rules.einsum`) and MAC counting (:mod:`spa.model.metrics`)."""

from __future__ import annotations

Terms = tuple[list[list[str]], list[str]]


def parse(equation: str, ranks: list[int | None]) -> Terms | None:
    """The labels of each input's axes and of the output's, with ``...`` expanded to labels of
    their own (``"…0"``, ``"…1"``, numbered from the right); None when it cannot be parsed."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        return None
    inputs = []
    widest = 0
    for term, rank in zip(terms, ranks):
        labels = _expand(term, rank)
        if labels is None:
            return None
        inputs.append(labels)
        widest = max(widest, sum(lb.startswith("…") for lb in labels))
    if arrow:
        out = _expand(rhs, None, widest)
        if out is None:
            return None
    else:  # implicit output: the labels used once, in alphabetical order, after the ellipsis
        counts: dict[str, int] = {}
        for labels in inputs:
            for lb in labels:
                counts[lb] = counts.get(lb, 0) + 1
        out = [f"…{k}" for k in reversed(range(widest))]
        out += sorted(lb for lb, n in counts.items() if n == 1 and not lb.startswith("…"))
    return inputs, out


def _expand(term: str, rank: int | None, ellipsis_width: int | None = None) -> list[str] | None:
    head, dots, tail = term.partition("...")
    if not (head + tail).isalpha() and head + tail:
        return None
    if not dots:
        return list(term) if rank is None or len(term) == rank else None
    width = ellipsis_width if ellipsis_width is not None else (None if rank is None else rank - len(head + tail))
    if width is None or width < 0:
        return None
    return [*head, *(f"…{k}" for k in reversed(range(width))), *tail]
