"""Label files (frame,count tables and napari Points CSVs) and chamber rectangles (napari Shapes
CSVs), well-formed and not, through every command that reads them."""

from __future__ import annotations

import shutil

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._runner import example_dir, run_cli
from tests.fuzz.strategies import label_recipes, shapes_recipes

TRAIN = ["--epochs", "1", "--batch-size", "4", "--synthetic-ratio", "1", "--device", "cpu"]


def _inputs(fuzz_files, folder):
    """The good 3-frame 64x64 stack and the small model, copied beside the bad input."""
    shutil.copy(fuzz_files / "stack.tif", folder / "stack.tif")
    shutil.copy(fuzz_files / "model.pt", folder / "start.pt")
    return folder / "stack.tif", folder / "start.pt"


@given(labels=label_recipes(), with_frames=st.none() | label_recipes())
def test_evaluate_reads_any_labels_or_refuses_them(fuzz_files, tmp_path, labels, with_frames):
    with example_dir(tmp_path) as folder:
        image, model = _inputs(fuzz_files, folder)
        path = folder / "labels.csv"
        path.write_bytes(labels.bytes())
        companion = folder / "labels.frames.csv"  # read beside a Points CSV
        if with_frames is not None:
            companion.write_bytes(with_frames.bytes())
        argv = ["evaluate", image, "--labels", path, "--model", model, "--device", "cpu"]
        run_cli([*argv, "--views", "1"], keep=(image, model, path, companion))


@given(labels=label_recipes())
def test_train_reads_any_labels_or_refuses_them(fuzz_files, tmp_path, labels):
    with example_dir(tmp_path) as folder:
        image, start = _inputs(fuzz_files, folder)
        path = folder / "labels.csv"
        path.write_bytes(labels.bytes())
        out = folder / "model.pt"
        out.write_bytes(b"an earlier model")
        argv = ["train", image, "--labels", path, "--out", out, "--init", start, *TRAIN]
        run_cli(argv, keep=(image, start, path), results=(out,))


@given(rois=shapes_recipes())
def test_count_reads_any_chamber_rectangles_or_refuses_them(fuzz_files, tmp_path, rois):
    with example_dir(tmp_path) as folder:
        image, model = _inputs(fuzz_files, folder)
        path = folder / "rois.csv"
        path.write_bytes(rois.bytes())
        out = folder / "counts.csv"
        out.write_text("an earlier result\n")
        argv = ["count", image, "--rois", path, "--out", out, "--model", model, "--views", "1"]
        run_cli([*argv, "--device", "cpu"], keep=(image, model, path), results=(out,))


@given(rois=shapes_recipes())
def test_train_reads_any_chamber_rectangles_or_refuses_them(fuzz_files, tmp_path, rois):
    with example_dir(tmp_path) as folder:
        image, start = _inputs(fuzz_files, folder)
        labels = folder / "labels.csv"
        labels.write_text("frame,count\n0,1\n1,0\n")
        path = folder / "rois.csv"
        path.write_bytes(rois.bytes())
        out = folder / "model.pt"
        argv = ["train", image, "--labels", labels, "--rois", path, "--out", out, "--init", start]
        run_cli([*argv, *TRAIN], keep=(image, start, labels, path), results=(out,))
