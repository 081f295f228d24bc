"""Model files: truncated, empty, another program's, code inside, weights that do not fit."""

from __future__ import annotations

import pickle
import shutil

import pytest
from hypothesis import given

from tests.fuzz._runner import example_dir, run_cli
from tests.fuzz.strategies import MARKER, ModelRecipe, model_recipes, write_model

TRAIN = ["--epochs", "1", "--batch-size", "4", "--synthetic-ratio", "1", "--device", "cpu"]


@given(recipe=model_recipes())
def test_count_and_evaluate_load_any_model_file_or_refuse_it(fuzz_files, tmp_path, recipe):
    with example_dir(tmp_path) as folder:
        model = write_model(recipe, folder / "model.pt", fuzz_files / "model.pt")
        image = shutil.copy(fuzz_files / "stack.tif", folder / "stack.tif")
        labels = shutil.copy(fuzz_files / "labels.csv", folder / "labels.csv")
        out = folder / "counts.csv"
        out.write_text("an earlier result\n")
        argv = ["count", image, "--out", out, "--model", model, "--views", "1", "--device", "cpu"]
        counted = run_cli(argv, keep=(image, model), results=(out,))
        argv = ["evaluate", image, "--labels", labels, "--model", model, "--device", "cpu"]
        evaluated = run_cli([*argv, "--views", "1"], keep=(image, model, labels))
        assert counted.status == evaluated.status
        assert not (folder / MARKER).exists(), "a model file ran code"
        if "code" in recipe.kind:
            assert counted.status == 2 and "refused" in counted.err[0]


@given(recipe=model_recipes())
def test_train_starts_from_any_model_file_or_refuses_it(fuzz_files, tmp_path, recipe):
    with example_dir(tmp_path) as folder:
        start = write_model(recipe, folder / "start.pt", fuzz_files / "model.pt")
        image = shutil.copy(fuzz_files / "stack.tif", folder / "stack.tif")
        labels = shutil.copy(fuzz_files / "labels.csv", folder / "labels.csv")
        out = folder / "model.pt"
        out.write_bytes(b"an earlier model")
        argv = ["train", image, "--labels", labels, "--out", out, "--init", start, *TRAIN]
        run = run_cli(argv, keep=(image, labels, start), results=(out,))
        assert not (folder / MARKER).exists(), "a model file ran code"
        if "code" in recipe.kind:
            assert run.status == 2 and "refused" in run.err[0]


@pytest.mark.parametrize("kind", ["pickle_code", "torch_code", "torch_code_inside"])
@pytest.mark.parametrize("command", ["count", "train"])
def test_a_model_file_that_carries_code_is_refused_and_the_code_never_runs(
    fuzz_files, tmp_path, kind, command
):
    model = write_model(ModelRecipe(kind), tmp_path / "model.pt", fuzz_files / "model.pt")
    image, labels = fuzz_files / "stack.tif", fuzz_files / "labels.csv"
    if command == "count":
        argv = ["count", image, "--out", tmp_path / "c.csv", "--model", model, "--device", "cpu"]
    else:
        argv = ["train", image, "--labels", labels, "--out", tmp_path / "m.pt", "--init", model]
        argv += TRAIN
    run = run_cli(argv, keep=(image, labels, model))
    assert run.status == 2 and "refused" in run.err[0], run.err
    assert not (tmp_path / MARKER).exists()
    # the file is a real threat: unpickled without torch's guard, it runs the code
    if kind == "pickle_code":
        with open(model, "rb") as f:
            pickle.load(f)  # noqa: S301 - on purpose, in a temporary folder
        assert (tmp_path / MARKER).exists()
