"""What the fuzz suite found, one plain test each (each failed before its fix)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
import torch

from tests.fuzz._runner import run_cli
from tests.fuzz.strategies import ImageRecipe, write_image


def _count(fuzz_files, image, *extra):
    out = image.parent / "counts.csv"
    argv = ["count", image, "--out", out, "--model", fuzz_files / "model.pt", "--device", "cpu"]
    return run_cli([*argv, *extra], keep=(image,), results=(out,))


def test_a_truncated_tiff_is_refused_in_one_line_not_logged_and_counted(fuzz_files, tmp_path):
    # tifffile logged "ERROR: <TiffPages> corrupted tag list" lines and read what it could
    recipe = ImageRecipe((1, 19, 29, 3), "i1", values="constant", storage="truncated", seed=2)
    run = _count(fuzz_files, write_image(recipe, tmp_path / "cut.tif"))
    assert run.status == 2 and "damaged TIFF" in run.err[0], run.err


def test_frames_too_small_for_a_chamber_are_refused_in_one_line(fuzz_files, tmp_path):
    # a warning that the 1x1 frames are resized, then "chamber 0 (0:1, 0:1) lies outside"
    image = tmp_path / "dot.tif"
    tifffile.imwrite(image, np.zeros((2, 1, 1), np.uint8))
    run = _count(fuzz_files, image)
    assert run.err == [
        f"napari-twinvae: error: {image}: the frames are 1x1 pixels; a chamber needs at least 8x8"
    ]


def test_nan_frames_are_refused_without_the_resize_warning_first(fuzz_files, tmp_path):
    image = tmp_path / "nan.tif"
    tifffile.imwrite(image, np.full((2, 40, 40), np.nan, np.float32))
    run = _count(fuzz_files, image)
    assert run.status == 2 and len(run.err) == 1 and "NaN" in run.err[0], run.err


def test_a_read_only_float_stack_counts_without_a_torch_warning(fuzz_files, tmp_path):
    # torch warned "The given NumPy array is not writable" for a memory-mapped float32 stack
    image = tmp_path / "float.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((2, 40, 50), np.float32))
    assert _count(fuzz_files, image).status == 0


def test_a_points_csv_with_a_count_column_is_read_as_points(fuzz_files, tmp_path):
    # a feature column 'count' made it a frame,count table: a KeyError traceback without an
    # index column, and the index taken for frames with one
    for header in ("axis-0,axis-1,axis-2,count", "index,axis-0,axis-1,axis-2,count"):
        labels = tmp_path / "points.csv"
        cells = "".join(f"\n{'0,' * ('index' in header)}0,{y},{y},1" for y in (10, 20))
        labels.write_text(header + cells + "\n")
        argv = ["evaluate", fuzz_files / "stack.tif", "--labels", labels, "--device", "cpu"]
        run = run_cli([*argv, "--model", fuzz_files / "model.pt"], keep=(labels,))
        assert run.status == 0 and '"n": 1' in run.out, run


def test_chamber_rectangles_saved_with_excels_bom_are_read(fuzz_files, tmp_path):
    rois = tmp_path / "rois.csv"
    rows = ["index,shape-type,vertex-index,axis-0,axis-1"]
    rows += [
        f"0,rectangle,{v},{y},{x}" for v, (y, x) in enumerate([(0, 0), (0, 40), (40, 40), (40, 0)])
    ]
    rois.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode())
    assert _count(fuzz_files, fuzz_files / "stack.tif", "--rois", rois).status == 0


def test_a_start_model_whose_weights_do_not_fit_is_refused_before_any_note(fuzz_files, tmp_path):
    payload = torch.load(fuzz_files / "model.pt", weights_only=True)
    name = sorted(payload["state_dict"])[0]
    payload["state_dict"][name] = torch.zeros(3, 3)
    torch.save(payload, tmp_path / "start.pt")
    argv = ["train", fuzz_files / "stack.tif", "--labels", fuzz_files / "labels.csv"]
    argv += ["--out", tmp_path / "m.pt", "--init", tmp_path / "start.pt", "--epochs", "1"]
    run = run_cli(argv)
    assert run.status == 2 and len(run.err) == 1 and "do not fit" in run.err[0], run.err


def test_a_foreign_pickle_protocol_is_refused_without_torchs_warning(fuzz_files, tmp_path):
    import pickle

    (tmp_path / "m.pt").write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=5))
    run = _count(fuzz_files, fuzz_files / "stack.tif", "--model", tmp_path / "m.pt")
    assert run.status == 2 and len(run.err) == 1, run.err


def test_a_negative_seed_is_refused_before_training(fuzz_files, tmp_path):
    # "expected non-negative integer" after the first progress lines
    argv = ["train", fuzz_files / "stack.tif", "--labels", fuzz_files / "labels.csv"]
    argv += ["--out", tmp_path / "m.pt", "--init", fuzz_files / "model.pt", "--seed", "-1"]
    run = run_cli(argv)
    assert run.err == ["napari-twinvae: error: seed must lie in 0..2**32-1, got -1"]


def test_synth_refuses_zero_images(tmp_path):
    # it wrote an empty, nonconformant TIFF (with tifffile's warning) that count then refused
    run = run_cli(["synth", "--n", "0", "--out", tmp_path])
    assert run.err == ["napari-twinvae: error: --n must be at least 1, got 0"]
    assert not (tmp_path / "images.tif").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["count", "{image}", "--out", "{image}", "--model", "{model}"],
        ["count", "{image}", "--out", "{rois}", "--rois", "{rois}", "--model", "{model}"],
        ["count", "{image}", "--out", "{model}", "--model", "{model}"],
        ["train", "{image}", "--labels", "{labels}", "--out", "{image}", "--init", "{model}"],
        ["train", "{image}", "--labels", "{labels}", "--out", "{labels}", "--init", "{model}"],
        ["synth", "--n", "2", "--background", "{folder}/images.tif", "--out", "{folder}"],
    ],
)
def test_a_result_file_that_names_an_input_is_refused(fuzz_files, tmp_path, argv):
    # found by fuzzing: `count a.tif --out a.tif` replaced the stack with its counts
    image = shutil.copy(fuzz_files / "stack.tif", tmp_path / "images.tif")
    model = shutil.copy(fuzz_files / "model.pt", tmp_path / "model.pt")
    labels = shutil.copy(fuzz_files / "labels.csv", tmp_path / "labels.csv")
    rois = tmp_path / "rois.csv"
    rois.write_text("index,shape-type,vertex-index,axis-0,axis-1\n0,rectangle,0,0,0\n")
    names = {"image": image, "model": model, "labels": labels, "rois": rois, "folder": tmp_path}
    argv = [a.format(**names) for a in argv]
    run = run_cli(
        [*argv, "--epochs", "1"] if argv[0] == "train" else argv,
        keep=tuple(p for p in (image, model, labels, rois)),
    )
    assert run.status == 2 and "is also an input" in run.err[0], run.err
