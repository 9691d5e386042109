"""``docs/coverage.md`` is the truth: every zoo file is in it, and every row recomputes the same.

``models/coverage.py`` prunes each ``models/zoo/**/*.onnx`` file with l1 at 0.3 and 0.6 (and with
``prune_norm_axes`` where a normalisation blocks groups) and checks it with the full ONNX checker,
onnxruntime and SPA's masked-equivalence check. Here each file's rows are recomputed and compared
with the committed table: counts, params, MACs and verdicts exactly, drift within a tolerance. A
model added to the zoo without regenerating the table (``python -m models.coverage``) fails, and
so does any FAIL row.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from models import coverage  # noqa: E402  (spa, onnx and onnxruntime only)

FILES = coverage.zoo_files()
NAMES = [str(p.relative_to(coverage.ZOO)) for p in FILES]
REGENERATE = f"regenerate the table with `{coverage.COMMAND}`"


@cache
def committed() -> tuple[coverage.Row, ...]:
    assert coverage.DOC.is_file(), f"{coverage.DOC} is missing: {REGENERATE}"
    return tuple(coverage.parse(coverage.DOC.read_text(encoding="utf-8")))


@cache
def committed_by_file() -> dict[Path, list[coverage.Row]]:
    by_file: dict[Path, list[coverage.Row]] = {}
    for row in committed():
        by_file.setdefault(coverage.file_of(row), []).append(row)
    return by_file


def test_every_zoo_file_has_rows_and_no_row_is_stale() -> None:
    assert len(FILES) >= 50  # the glob is recursive: torch, frameworks, hf, transformers zoos...
    rows = committed()
    listed = set(committed_by_file())
    assert not set(FILES) - listed, f"zoo files missing from docs/coverage.md: {REGENERATE}"
    assert not listed - set(FILES), f"docs/coverage.md has rows for files that are gone: {REGENERATE}"
    for path in FILES:
        model, exporter = coverage.model_and_exporter(path)
        ratios = {r.cells[2] for r in rows if r.section == coverage.DEFAULT_MODE and r.cells[:2] == (model, exporter)}
        assert ratios == {f"{x:g}" for x in coverage.RATIOS}, (path, ratios)


def test_committed_table_has_no_fail() -> None:
    rows = committed()
    failed = [" | ".join(r.cells) for r in rows if r.failed]
    assert not failed, "\n".join(failed)
    assert sum(r.cells[coverage.RESULT] == coverage.PASS for r in rows if r.section != "files") > 100


@pytest.mark.parametrize("name", NAMES)
def test_rows_recompute(name: str) -> None:
    fresh = coverage.rows_for_file(coverage.ZOO / name)
    failed = [" | ".join(r.cells) for r in fresh if r.failed]
    assert not failed, "\n".join(failed)
    problems = coverage.compare_rows(committed_by_file().get(coverage.ZOO / name, []), fresh)
    assert not problems, "\n".join(problems) + f"\n{REGENERATE}"


# The comparison itself: what counts as equal, and what does not.

ROW = coverage.Row(coverage.DEFAULT_MODE, (
    "transformers/bert_nn", "ts", "0.3", "7 / 6 / 1 / 0", "78,411 → 41,699 (−46.8 %)", "69,952 → 35,736 (−48.9 %)",
    "PASS", "runs", "approx, drift 0.3633", "PASS", "model output 'logits' axis 1"))


def _with(row: coverage.Row, column: int, value: str) -> coverage.Row:
    cells = list(row.cells)
    cells[column] = value
    return coverage.Row(row.section, tuple(cells))


def test_render_then_parse_round_trips() -> None:
    piped = _with(ROW, -1, "Concat 'a|b' reads 'x'")
    rows = [ROW, coverage.Row(coverage.NORM_MODE, piped.cells)]
    assert coverage.parse(coverage.render(rows, date="2000-01-01")) == rows


def test_compare_tolerates_drift_noise_only() -> None:
    assert coverage.compare_rows([ROW], [_with(ROW, coverage.EQUIVALENCE, "approx, drift 0.3641")]) == []
    assert coverage.compare_rows([ROW], [_with(ROW, coverage.EQUIVALENCE, "approx, drift 0.40")])
    assert coverage.compare_rows([ROW], [_with(ROW, coverage.EQUIVALENCE, "PASS (exact)")])
    assert coverage.compare_rows([ROW], [_with(ROW, 3, "7 / 5 / 2 / 0")])
    assert coverage.compare_rows([ROW], [_with(ROW, 5, "69,952 → 35,737 (−48.9 %)")])
    assert coverage.compare_rows([ROW], [])  # a row the table has but nothing computes
    assert coverage.compare_rows([], [ROW])  # a computed row the table lacks


def test_blocked_reasons_are_short_and_counted() -> None:
    reasons = [
        "LayerNormalization 'ln' normalises over a pruned axis (pruning it is approximate; opt in with "
        "--prune-norm-axes)",
        "model output 'logits' axis 1: pruning would change the model's interface; Gather 'emb' gathers along axis 0",
        "model output 'logits' axis 1: pruning would change the model's interface",
    ]
    assert coverage.blocked_summary(reasons) == ("LayerNormalization 'ln' normalises over a pruned axis; "
                                                 "model output 'logits' axis 1 (×2)")
    assert coverage.blocked_summary([]) == "—"


def test_merge_replaces_only_the_chosen_files_rows() -> None:
    rows = list(committed())
    path = coverage.ZOO / "defaults" / "patterns" / "swin.ts.onnx"
    old = [r for r in rows if coverage.file_of(r) == path]
    assert {r.section for r in old} >= {"files", coverage.DEFAULT_MODE, coverage.CLI_MODE}
    fresh = [_with(r, -1, "new") for r in old]
    merged = coverage.merge(rows, fresh, {path.resolve()})
    assert len(merged) == len(rows)

    def by_section(rs: list[coverage.Row]) -> list[coverage.Row]:  # the order render writes them in
        return sorted(rs, key=lambda r: list(coverage.SECTIONS).index(r.section))

    assert by_section([r for r in merged if coverage.file_of(r) != path]) == [
        r for r in rows if coverage.file_of(r) != path]
    assert [r for r in merged if coverage.file_of(r) == path] == fresh
    # merging the file's own rows back gives the committed document's rows, in its order
    assert coverage.parse(coverage.render(coverage.merge(rows, old, {path.resolve()}), "2000-01-01")) == rows
