"""Image files of every dtype, shape, size and storage through every command that reads one."""

from __future__ import annotations

import csv
import shutil

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._runner import example_dir, run_cli
from tests.fuzz.strategies import image_recipes, write_image


def _image(recipe, folder):
    return write_image(recipe, folder / "image.tif")


@given(recipe=image_recipes(), views=st.sampled_from(["1", "8"]))
def test_count_reads_any_image_or_refuses_it(fuzz_files, tmp_path, recipe, views):
    with example_dir(tmp_path) as folder:
        image = _image(recipe, folder)
        out = folder / "counts.csv"
        out.write_text("an earlier result\n")
        argv = ["count", image, "--out", out, "--model", fuzz_files / "model.pt", "--views", views]
        run = run_cli([*argv, "--device", "cpu"], keep=(image,), results=(out,))
        if run.status == 0:
            with open(out, newline="") as f:
                rows = list(csv.reader(f))
            assert rows[0][:3] == ["frame", "chamber", "count"] and len(rows) > 1


@given(recipe=image_recipes())
def test_evaluate_reads_any_image_or_refuses_it(fuzz_files, tmp_path, recipe):
    with example_dir(tmp_path) as folder:
        image = _image(recipe, folder)
        labels = folder / "labels.csv"
        labels.write_text("frame,count\n0,1\n")
        argv = ["evaluate", image, "--labels", labels, "--model", fuzz_files / "model.pt"]
        run_cli([*argv, "--device", "cpu"], keep=(image, labels))


@given(recipe=image_recipes())
def test_train_reads_any_image_or_refuses_it(fuzz_files, tmp_path, recipe):
    with example_dir(tmp_path) as folder:
        image = _image(recipe, folder)
        labels = folder / "labels.csv"
        labels.write_text("frame,count\n0,1\n")
        start = shutil.copy(fuzz_files / "model.pt", folder / "start.pt")
        out = folder / "model.pt"
        out.write_bytes(b"an earlier model")
        argv = ["train", image, "--labels", labels, "--out", out, "--init", start]
        argv += ["--epochs", "1", "--batch-size", "4", "--synthetic-ratio", "1", "--device", "cpu"]
        run_cli(argv, keep=(image, labels, start), results=(out,))


@given(recipe=image_recipes(two_d=True))
def test_synth_reads_any_background_or_refuses_it(tmp_path, recipe):
    with example_dir(tmp_path) as folder:
        image = _image(recipe, folder)
        out = folder / "out"
        out.mkdir()
        earlier = out / "images.tif"
        earlier.write_bytes(b"an earlier stack")
        argv = ["synth", "--n", "2", "--background", image, "--out", out]
        run_cli(argv, keep=(image,), results=(earlier, out / "counts.csv", out / "points.csv"))
