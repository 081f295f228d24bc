"""What the fuzz suite found, one plain test each (each failed before its fix)."""

from __future__ import annotations

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
