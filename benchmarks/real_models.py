"""Real trained models: prune the PP-OCR models shipped in ``rapidocr-onnxruntime`` and read text with them.

The wheel ships three trained ONNX models with dynamic sizes: text detection (DBNet, N x 3 x H x
W), direction classification (N x 3 x 48 x W) and recognition (PP-OCRv4, N x 3 x 48 x W). Each is
pruned at ``--ratio`` (default 0.2) with ``l1`` and with ``spa prune``'s default criterion
(``obspa``), stating the size the library feeds as the typical ``--shape``. The pruned model then
replaces the original in RapidOCR's own pipeline, which feeds it the sizes it really uses
(detection: the image resized to multiples of 32; classification: batches of 6 at 48 x 192;
recognition: batches of 6 at 48 x W for the line's width), on images of text rendered with PIL.
The table compares the text read with each pruned model to the text the original pipeline reads:
lines read identically, and the mean character similarity (``difflib``) of the whole page.

``--models magika`` adds the file-type model of the ``magika`` wheel (int32 bytes ``N x 2048``):
pruned the same way, then used by magika's own library on files found on this machine
(:mod:`benchmarks.magika_task`); its row gives the fraction of files whose content type is
unchanged (in the "lines same" column).

    pip install -e '.[bench]'
    python -m benchmarks.real_models [--ratio 0.2] [--criteria l1,obspa] [--models det,cls,rec,magika] [--json FILE]
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import spa
from spa.records import Runtime, Selection

#: Typical input shape of each model, as RapidOCR feeds it (config.yaml: rec_img_shape,
#: cls_image_shape; detection resizes a side of 736 in its default config, 320 keeps obspa quick).
MODELS = {
    "det": ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 320, 320]),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192]),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320]),
}
#: Lines of text on the rendered pages (Latin letters and digits: the model reads both).
PAGES = (
    ("Invoice 2024-0117", "Total amount: 349.90 EUR", "Thank you for your order"),
    ("STRUCTURED PRUNING", "removes whole channels", "from trained models"),
    ("Platform 7 departs 14:35", "Coach B seats 21-24", "Please keep your ticket"),
    ("Room 402 checkout 11am", "Breakfast 7:00 - 10:30", "WiFi password: orange42"),
)


@dataclass
class Row:
    model: str
    criterion: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    sizes: str
    prune_seconds: float
    lines_same: float
    char_similarity: float
    error: str = ""


def render(lines: tuple[str, ...], seed: int) -> np.ndarray:
    """A white page with ``lines`` of black text (RGB uint8), slightly varied by ``seed``."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.truetype("DejaVuSans.ttf", int(rng.integers(26, 34)))
    img = Image.new("RGB", (720, 70 + 60 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    for k, text in enumerate(lines):
        draw.text((30 + int(rng.integers(0, 20)), 30 + 60 * k), text, fill="black", font=font)
    return np.asarray(img)[:, :, ::-1].copy()  # RapidOCR reads BGR, as OpenCV does


def read(engine: object, image: np.ndarray) -> list[str]:
    """The text lines RapidOCR reads in ``image``, top to bottom."""
    result, _ = engine(image)  # type: ignore[operator]
    return [r[1] for r in sorted(result or [], key=lambda r: (r[0][0][1], r[0][0][0]))]


def compare(reference: list[list[str]], got: list[list[str]]) -> tuple[float, float]:
    """(fraction of reference lines read identically, mean character similarity per page)."""
    same = total = 0
    sims = []
    for ref, out in zip(reference, got):
        total += len(ref)
        same += sum(1 for a, b in zip(ref, out) if a == b)
        sims.append(difflib.SequenceMatcher(None, "\n".join(ref), "\n".join(out)).ratio())
    return same / max(total, 1), float(np.mean(sims)) if sims else 0.0


def models_folder() -> Path:
    try:
        import rapidocr_onnxruntime
    except ImportError:
        raise SystemExit("this benchmark needs the bench extra: pip install -e '.[bench]'") from None
    return Path(rapidocr_onnxruntime.__file__).parent / "models"


def engine_with(replaced: dict[str, Path]) -> object:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(**{f"{kind}_model_path": str(p) for kind, p in replaced.items()})


def run(ratio: float, criteria: list[str], kinds: list[str], pages: int) -> list[Row]:
    folder = models_folder()
    images = [render(PAGES[k % len(PAGES)], k) for k in range(pages)]
    reference = [read(engine_with({}), im) for im in images]
    logging.info("original pipeline reads: %s", reference)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            name, shape = MODELS[kind]
            for criterion in criteria:
                t0 = time.perf_counter()
                try:
                    pruned, _, report = spa.prune(folder / name, ratio, criterion, selection=Selection(round_to="auto"),
                                                  runtime=Runtime(shapes={"x": shape}))
                except spa.SpaError as exc:
                    rows.append(Row(kind, criterion, 0, 0, 0, 0, "", time.perf_counter() - t0, 0.0, 0.0, str(exc)))
                    continue
                seconds = time.perf_counter() - t0
                out = Path(tmp) / f"{kind}.{criterion}.onnx"
                spa.save_model(pruned, out)
                got = [read(engine_with({kind: out}), im) for im in images]
                same, sim = compare(reference, got)
                sizes = " / ".join(" ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in s.items())
                                   for s in (report.sizes or {}).get("checked", []))
                rows.append(Row(kind, criterion, report.before.params, report.after.params, report.before.macs,
                                report.after.macs, sizes, seconds, same, sim))
                logging.info("%s %s: %s", kind, criterion, got)
    return rows


def run_magika(ratio: float, criteria: list[str], files: int = 600) -> list[Row]:
    """The magika model pruned with each criterion, judged by the labels magika's library gives."""
    from benchmarks import magika_task

    folder = magika_task.model_folder()
    found = magika_task.files_on_machine(files)
    reference = magika_task.labels(folder, found)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for criterion in criteria:
            t0 = time.perf_counter()
            try:
                pruned, _, report = spa.prune(folder / "model.onnx", ratio, criterion,
                                              selection=Selection(round_to="auto"),
                                              runtime=Runtime(shapes={"bytes": [1, 2048]}))
            except spa.SpaError as exc:
                rows.append(Row("magika", criterion, 0, 0, 0, 0, "", time.perf_counter() - t0, 0.0, 0.0, str(exc)))
                continue
            seconds = time.perf_counter() - t0
            out = Path(tmp) / f"magika.{criterion}.onnx"
            spa.save_model(pruned, out)
            got = magika_task.labels(magika_task.with_model(folder, out, Path(tmp) / criterion), found)
            rows.append(Row("magika", criterion, report.before.params, report.after.params, report.before.macs,
                            report.after.macs, f"{len(found)} files", seconds, magika_task.agreement(reference, got),
                            float("nan")))
    return rows


def table(rows: list[Row], ratio: float) -> str:
    lines = [f"ratio {ratio:g}; text compared with the original pipeline's",
             "| model | criterion | params | MACs (typical size) | checked at | prune s | lines same | char sim |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | {r.criterion} | error: {r.error} | | | {r.prune_seconds:.1f} | | |")
            continue
        lines.append(f"| {r.model} | {r.criterion} | {r.params_before:,} -> {r.params_after:,} | "
                     f"{r.macs_before / 1e6:.1f}M -> {r.macs_after / 1e6:.1f}M | {r.sizes} | {r.prune_seconds:.1f} | "
                     f"{r.lines_same:.0%} | {r.char_similarity:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--criteria", default="l1,obspa")
    ap.add_argument("--models", default="det,cls,rec")
    ap.add_argument("--pages", type=int, default=4, help="rendered pages of text (default 4)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    kinds = args.models.split(",")
    criteria = args.criteria.split(",")
    ocr = [k for k in kinds if k != "magika"]
    rows = run(args.ratio, criteria, ocr, args.pages) if ocr else []
    if "magika" in kinds:
        rows += run_magika(args.ratio, criteria)
    print(table(rows, args.ratio))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
