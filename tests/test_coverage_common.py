"""benchmarks/coverage_common.py: the summary counts and the generated block of a coverage document."""

from __future__ import annotations

from pathlib import Path

from benchmarks.coverage_common import BEGIN, END, Outcome, blocked_summary, summary, write_doc


def _outcomes() -> list[Outcome]:
    return [Outcome("a", "ts", "1x3x8x8", "PASS", "3 / 2 / 1", reasons=["model output 'logits' axis 1: pruning would"
                                                                        " change the model's interface"]),
            Outcome("a", "dynamo", "1x3x8x8", "export failed", why="RuntimeError: unsupported"),
            Outcome("b", "ts", "1x3x8x8", "BLOCKED", reasons=["reaches Foo 'f', which has no coupling rule"] * 2)]


def test_summary_counts_per_exporter() -> None:
    text = summary(_outcomes())
    assert "**ts**: 2 models: 1 PASS, 1 BLOCKED, 0 FAIL, 0 export failed." in text
    assert "**dynamo**: 1 models: 0 PASS, 0 BLOCKED, 0 FAIL, 1 export failed." in text


def test_blocked_summary_counts_reasons_and_outputs_last() -> None:
    assert blocked_summary(["reaches Foo 'f', which has no coupling rule"] * 2 + ["model output 'y' axis 1: x"]) \
        == "reaches Foo 'f', which has no coupling rule (×2); the model output"
    assert blocked_summary([]) == "—"


def test_write_doc_replaces_only_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "coverage.md"
    doc.write_text(f"# Title\n\nProse before.\n\n{BEGIN}\nold table\n{END}\n\nProse after.\n")
    write_doc(doc, "Title", "python -m x", "torch 0", _outcomes())
    text = doc.read_text()
    assert text.startswith("# Title\n\nProse before.\n") and text.endswith("\n\nProse after.\n")
    assert "old table" not in text and "| b | ts | 1x3x8x8 | BLOCKED |" in text
    assert "`python -m x`" in text and text.count(BEGIN) == 1 and text.count(END) == 1
