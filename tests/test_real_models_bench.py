"""benchmarks.real_models on small cases: rendering, text comparison, and (with the bench extra)
one pruned PP-OCR classifier read through RapidOCR's own pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from benchmarks.real_models import MODELS, compare, models_folder, render


def test_rendered_pages_and_text_comparison() -> None:
    page = render(("Hello 42",), seed=0)
    assert page.dtype == np.uint8 and page.ndim == 3 and page.shape[2] == 3
    assert (page < 128).any() and (page > 128).mean() > 0.9  # black text on a white page
    same, sim = compare([["Hello 42", "Bye"]], [["Hello 42", "Bye!"]])
    assert same == 0.5 and 0.9 < sim < 1.0
    assert compare([["a"]], [[]]) == (0.0, 0.0)


def test_typical_shapes_are_the_ones_the_library_feeds() -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    config = yaml.safe_load((models_folder().parent / "config.yaml").read_text())
    assert MODELS["rec"][1][1:] == [3, *config["Rec"]["rec_img_shape"][1:]]
    assert MODELS["cls"][1][1:] == config["Cls"]["cls_image_shape"]
    for name, _ in MODELS.values():
        assert (models_folder() / name).is_file()


def test_magika_task_runs_the_pruned_model_through_magika() -> None:
    """The magika row: files found on the machine, labelled by magika's own library with the
    pruned model in place; the same files every time."""
    pytest.importorskip("magika")
    from benchmarks import magika_task
    from benchmarks.real_models import run_magika

    files = magika_task.files_on_machine(30)
    assert files == magika_task.files_on_machine(30) and all(f.stat().st_size >= magika_task.MIN_BYTES for f in files)
    assert magika_task.agreement(["a", "b"], ["a", "c"]) == 0.5
    (row,) = run_magika(0.2, ["l1"], files=30)
    assert not row.error and row.params_after < row.params_before
    assert 0.0 <= row.lines_same <= 1.0
