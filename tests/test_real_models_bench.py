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
