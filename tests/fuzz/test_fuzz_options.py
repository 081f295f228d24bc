"""Option values a user can type: zero, negative, huge, not a number, unknown names."""

from __future__ import annotations

import shutil

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._runner import example_dir, run_cli

NUMBER = st.one_of(
    st.integers(-3, 3).map(str),
    st.sampled_from(
        ["0", "-1", "1e9", "2147483648", "1e400", "nan", "inf", "-inf", "0.5", "", "x"]
    ),
)
NAME = st.sampled_from(["", "default", "auto", "cpu", "cuda", "cuda:7", "mps", "tpu", "x", "-1"])


@st.composite
def options(draw, choices: dict[str, st.SearchStrategy]) -> list[str]:
    """Some of ``choices``' options with drawn values."""
    names = draw(st.lists(st.sampled_from(sorted(choices)), unique=True, max_size=3))
    argv = []
    for name in names:
        argv += [name, draw(choices[name])]
    return argv


COUNT = {"--batch-size": NUMBER, "--views": NUMBER, "--device": NAME, "--model": NAME}
TRAIN = {
    "--epochs": NUMBER,
    "--minutes": NUMBER,
    "--batch-size": NUMBER,
    "--learning-rate": NUMBER,
    "--synthetic-ratio": NUMBER,
    "--seed": NUMBER,
    "--device": NAME,
    "--freeze": st.sampled_from(["none", "core", "outer", "thaw", "counting", "all", ""]),
    "--optimizer": st.sampled_from(["adam", "radam", "sgd", ""]),
    "--schedule": st.sampled_from(["constant", "cosine", "linear", ""]),
    "--preset": st.sampled_from(["bf", "pc", "dic", ""]),
}
SYNTH = {"--n": NUMBER, "--seed": NUMBER, "--preset": st.sampled_from(["bf", "pc", "", "x"])}


@given(extra=options(COUNT))
def test_count_takes_any_option_value_or_refuses_it(fuzz_files, tmp_path, extra):
    with example_dir(tmp_path) as folder:
        image = shutil.copy(fuzz_files / "stack.tif", folder / "stack.tif")
        model = shutil.copy(fuzz_files / "model.pt", folder / "model.pt")
        out = folder / "counts.csv"
        out.write_text("an earlier result\n")
        argv = ["count", image, "--out", out, "--model", model, "--device", "cpu", *extra]
        run_cli(argv, keep=(image, model), results=(out,))


@given(extra=options(TRAIN))
def test_train_takes_any_option_value_or_refuses_it(fuzz_files, tmp_path, extra):
    with example_dir(tmp_path) as folder:
        image = shutil.copy(fuzz_files / "stack.tif", folder / "stack.tif")
        labels = shutil.copy(fuzz_files / "labels.csv", folder / "labels.csv")
        start = shutil.copy(fuzz_files / "model.pt", folder / "start.pt")
        out = folder / "model.pt"
        out.write_bytes(b"an earlier model")
        argv = ["train", image, "--labels", labels, "--out", out, "--init", start]
        # small runs: a drawn epoch count or budget replaces these (argparse keeps the last)
        argv += ["--epochs", "1", "--batch-size", "4", "--synthetic-ratio", "1", "--device", "cpu"]
        extra = [v if v not in ("1e9", "2147483648", "1e400", "inf") else "3" for v in extra]
        run_cli([*argv, *extra], keep=(image, labels, start), results=(out,))


@given(extra=options(SYNTH))
def test_synth_takes_any_option_value_or_refuses_it(tmp_path, extra):
    with example_dir(tmp_path) as folder:
        out = folder / "out"
        # --n stays small; huge values are tried apart, for the memory they would take
        extra = [v if v not in ("1e9", "2147483648", "1e400", "inf") else "3" for v in extra]
        run_cli(["synth", "--n", "2", "--out", out, *extra])
