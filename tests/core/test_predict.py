"""Counting, reconstruction and translation over time series (core.predict)."""

import csv
import inspect
import tracemalloc

import numpy as np
import pytest
import tifffile
import torch

from napari_twinvae.core import CheckpointError, ModelConfig, TwinVAE, precision
from napari_twinvae.core.chambers import chamber_crops
from napari_twinvae.core.count_paths import CountingPath, counting_dtype, counting_path
from napari_twinvae.core.intensity import Normalization
from napari_twinvae.core.io import load_checkpoint, read_stack
from napari_twinvae.core.model_view import ModelView, place_crops, reconstruct, translate
from napari_twinvae.core.predict import CountProgress, count, iter_count, write_counts_csv
from tests._checkpoints import small_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return load_checkpoint(small_checkpoint(tmp_path_factory.mktemp("model") / "small.pt"))


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4096, (10, 96, 160), dtype=np.uint16)


def _full_forward_counts(checkpoint, crops, domain="natural"):
    x = torch.from_numpy(crops.reshape(-1, 1, 128, 128))
    with torch.no_grad():
        return checkpoint.model.eval()(x, domain).count.numpy()


@pytest.mark.parametrize("domain", ["natural", "synthetic"])
def test_counting_path_equals_the_papers_network_full_forward(domain):
    torch.manual_seed(0)
    model = TwinVAE(ModelConfig()).eval()  # the real architecture, not the small test one
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        full = model(x, domain).count
        fast = CountingPath(model, domain)(x)
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-4)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.encoders[domain][0].weight.is_contiguous()  # the model's own layout is untouched


def test_iter_count_equals_full_forward_on_the_chamber_crops(checkpoint, frames):
    regions = [(0, 0, 96, 80), (10, 70, 90, 160)]
    result = count(
        frames, checkpoint, regions, batch_size=4, device="cpu", views=1, mixed_precision=False
    )
    crops = chamber_crops(frames, regions, checkpoint.normalization)
    expected = _full_forward_counts(checkpoint, crops).reshape(10, 2)
    np.testing.assert_allclose(result.estimates, expected, rtol=1e-5, atol=1e-5)
    assert result.estimates.dtype == np.float32 and result.counts.dtype == np.int64
    np.testing.assert_array_equal(result.counts, np.clip(np.floor(expected + 0.5), 0, None))
    np.testing.assert_array_equal(result.frames, np.arange(10))
    assert result.regions == regions


@pytest.mark.parametrize("views", [4, 8])
def test_views_average_the_four_turns_and_with_eight_the_mirror_images(checkpoint, frames, views):
    regions = [(0, 0, 96, 80), (10, 70, 90, 160)]
    result = count(
        frames, checkpoint, regions, batch_size=4, device="cpu", views=views, mixed_precision=False
    )
    crops = chamber_crops(frames, regions, checkpoint.normalization)
    turned = [np.rot90(crops, k, axes=(-2, -1)) for k in range(4)]
    orientations = turned + [np.flip(t, -1) for t in turned][: views - 4]
    expected = np.mean(
        [_full_forward_counts(checkpoint, np.ascontiguousarray(o)) for o in orientations], axis=0
    )
    np.testing.assert_allclose(result.estimates.ravel(), expected, rtol=1e-5, atol=1e-5)


def test_the_default_count_averages_the_four_turns(checkpoint, frames):
    default = count(frames[:2], checkpoint, device="cpu").estimates
    np.testing.assert_array_equal(
        default, count(frames[:2], checkpoint, device="cpu", views=4).estimates
    )


@pytest.mark.parametrize(
    ("views", "moves"),
    [
        (2, ["half turn"]),
        (4, ["half turn", "quarter turn"]),
        (8, ["half turn", "quarter turn", "mirror", "flip", "transpose"]),
    ],
)
def test_the_count_does_not_change_when_the_chamber_is_turned_or_mirrored(
    checkpoint, frames, views, moves
):
    frame = frames[:1]
    reference = count(frame, checkpoint, device="cpu", views=views).estimates
    move = {
        "half turn": frame[:, ::-1, ::-1],
        "quarter turn": np.rot90(frame, 1, axes=(1, 2)),
        "mirror": frame[..., ::-1],
        "flip": frame[:, ::-1],
        "transpose": frame.transpose(0, 2, 1),
    }
    for name in moves:
        other = count(np.ascontiguousarray(move[name]), checkpoint, device="cpu", views=views)
        np.testing.assert_allclose(other.estimates, reference, rtol=1e-5, atol=1e-5, err_msg=name)
    one = count(frame, checkpoint, device="cpu", views=1).estimates
    mirrored = count(np.ascontiguousarray(frame[..., ::-1]), checkpoint, device="cpu", views=1)
    assert not np.allclose(mirrored.estimates, one, atol=1e-5)  # one view alone is not invariant
    with pytest.raises(ValueError, match="views must be one of"):
        count(frame, checkpoint, device="cpu", views=3)


def test_counts_do_not_depend_on_the_batch_size(checkpoint, frames):
    regions = [(0, 0, 48, 48), (48, 0, 96, 48), (0, 48, 96, 160)]
    reference = count(frames, checkpoint, regions, batch_size=64, device="cpu").estimates
    for batch_size in (1, 2, 5, 7):  # fewer images per pass than chambers per frame, too
        again = count(frames, checkpoint, regions, batch_size=batch_size, device="cpu")
        np.testing.assert_allclose(again.estimates, reference, rtol=1e-5, atol=1e-5)


def test_chambers_are_cropped_and_resized_before_counting(checkpoint):
    frame = np.zeros((1, 300, 400), dtype=np.uint16)
    frame[0, 50:114, 100:164] = np.random.default_rng(1).integers(0, 4000, (64, 64))
    crop = frame[:, 50:114, 100:164]
    big = np.kron(crop[0], np.ones((2, 2), dtype=np.uint16))[None]  # the chamber at 128x128
    in_frame = count(frame, checkpoint, [(50, 100, 114, 164)], device="cpu").estimates
    alone = count(big, checkpoint, device="cpu").estimates
    np.testing.assert_allclose(in_frame, alone, rtol=1e-5, atol=1e-5)
    whole = count(frame, checkpoint, device="cpu")  # no chambers: the whole frame, resized
    assert whole.regions == [(0, 0, 300, 400)]


def test_a_single_2d_frame_and_any_dtype(checkpoint):
    frame = np.random.default_rng(2).random((128, 128))
    one = count(frame, checkpoint, device="cpu")
    assert one.estimates.shape == (1, 1)
    for dtype in (np.uint8, np.uint16, np.float32):
        scaled = (frame * 200).astype(dtype)
        assert count(scaled, checkpoint, device="cpu").estimates.shape == (1, 1)


@pytest.mark.parametrize(
    ("data", "regions", "message"),
    [
        (np.zeros((64, 64, 3), np.uint8), None, "RGB"),
        (np.zeros((2, 3, 64, 64)), None, "4D"),
        (np.zeros((0, 64, 64)), None, "empty"),
        (np.zeros((2, 64, 64)), [(100, 100, 150, 150)], "outside"),
    ],
)
def test_bad_input_is_refused_before_counting(checkpoint, data, regions, message):
    with pytest.raises(ValueError, match=message):
        next(iter_count(data, checkpoint, regions, device="cpu"))


def test_nan_frames_are_refused_with_their_frame_numbers(checkpoint):
    frames = np.zeros((9, 128, 128), np.float32)
    frames[6, 3, 3] = np.nan
    with pytest.raises(ValueError, match="frame 6: .*NaN"):
        count(frames, checkpoint, batch_size=4, device="cpu")
    with pytest.raises(ValueError, match="at least 1"):
        count(frames, checkpoint, batch_size=0, device="cpu")


def test_progress_and_stopping_between_batches(checkpoint, frames):
    steps = []
    counting = iter_count(frames, checkpoint, batch_size=3, device="cpu")
    steps.append(next(counting))
    steps.append(next(counting))
    counting.close()  # Stop in the dock: no error, no result
    assert steps == [CountProgress(0, 10), CountProgress(3, 10)]
    done = list(iter_count(frames, checkpoint, batch_size=3, device="cpu"))
    assert [s.done for s in done] == [0, 3, 6, 9, 10]


def test_count_takes_and_shows_the_parameters_of_iter_count(checkpoint, frames):
    shown = inspect.signature(count)
    assert shown.parameters == inspect.signature(iter_count).parameters  # help(count) lists them
    assert shown.return_annotation == "CountResult"
    result = count(frames[:2], checkpoint, None, 1, "cpu", views=1, uncertainty=False)
    assert result.counts.shape == (2, 1) and result.uncertainty is None
    with pytest.raises(TypeError, match="view"):
        count(frames, checkpoint, view=1)  # a misspelt option is refused before any work


def test_only_the_chosen_frames_are_counted(checkpoint, frames):
    everything = count(frames, checkpoint, device="cpu")
    some = count(frames, checkpoint, device="cpu", frame_indices=[7, 2, 9])
    np.testing.assert_array_equal(some.frames, [7, 2, 9])
    np.testing.assert_allclose(some.estimates, everything.estimates[[7, 2, 9]], atol=1e-5)
    with pytest.raises(ValueError, match="outside the series"):
        count(frames, checkpoint, device="cpu", frame_indices=[3, 10])


def test_a_large_tiff_is_read_lazily_in_bounded_memory(checkpoint, tmp_path):
    path = tmp_path / "series.tif"
    n = 1000  # 16.4 MB of uint8 frames on disk
    rng = np.random.default_rng(3)
    tifffile.imwrite(path, rng.integers(0, 256, (n, 128, 128), dtype=np.uint8))
    assert isinstance(read_stack(path), np.memmap)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc; the memory map is not one
    try:
        result = count(path, checkpoint, batch_size=16, device="cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.estimates.shape == (n, 1)
    assert peak < 8e6, f"numpy peaked at {peak / 1e6:.1f} MB while counting a 16.4 MB series"


def test_the_checkpoints_normalization_is_used(tmp_path):
    fixed = load_checkpoint(
        small_checkpoint(tmp_path / "f.pt", normalization=Normalization("fixed", 0, 1000))
    )
    frames = np.full((2, 128, 128), 500, dtype=np.uint16)
    frames[1] = 1000
    expected = _full_forward_counts(
        fixed, chamber_crops(frames, None, Normalization("fixed", 0, 1000))
    )
    np.testing.assert_allclose(
        count(frames, fixed, device="cpu", mixed_precision=False).estimates[:, 0],
        expected,
        atol=1e-5,
    )


def test_checkpoint_by_path_and_missing_default(tmp_path, frames, monkeypatch):
    path = small_checkpoint(tmp_path / "m.pt")
    assert count(frames[:2], path, device="cpu").estimates.shape == (2, 1)
    monkeypatch.setattr("napari_twinvae.core.io.default_model_path", lambda: tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="no default model"):
        count(frames[:2], "default", device="cpu")


def test_csv_rows_and_file_column(checkpoint, frames, tmp_path):
    result = count(frames[:3], checkpoint, [(0, 0, 96, 80), (0, 80, 96, 160)], device="cpu")
    write_counts_csv(tmp_path / "one.csv", result)
    with open(tmp_path / "one.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "frame", "chamber", "count", "estimate", "flag", "uncertainty", "series_flag"
    ] and len(rows) == 7  # fmt: skip
    assert [int(v) for v in rows[4][:3]] == [1, 1, int(result.counts[1, 1])]
    assert float(rows[4][3]) == pytest.approx(result.estimates[1, 1], abs=1e-4)
    write_counts_csv(tmp_path / "two.csv", [result, result], files=["a.tif", "b.tif"])
    with open(tmp_path / "two.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "file" and rows[1][0] == "a.tif" and rows[-1][0] == "b.tif"
    assert len(rows) == 13


def test_reconstruction_and_translation(checkpoint, frames):
    regions = [(0, 0, 96, 80), (10, 70, 90, 160)]
    rec = reconstruct(frames[:3], checkpoint, regions, device="cpu")
    syn = translate(frames[:3], checkpoint, regions, device="cpu")
    assert rec.shape == syn.shape == (3, 2, 128, 128)
    assert rec.min() >= 0.0 and rec.max() <= 1.0
    crops = torch.from_numpy(chamber_crops(frames[:3], regions, checkpoint.normalization))
    with torch.no_grad():
        mu, _ = checkpoint.model.encode(crops.reshape(-1, 1, 128, 128), "natural")
        expected = checkpoint.model.decode(mu, "synthetic").reshape(3, 2, 128, 128).numpy()
    np.testing.assert_allclose(syn, expected, atol=1e-5)
    assert not np.allclose(rec, syn)  # the two decoders differ


def test_model_view_is_lazy_and_puts_chambers_back_in_place(checkpoint, frames):
    regions = [(0, 0, 96, 80), (10, 70, 90, 160)]
    view = ModelView(frames, checkpoint, regions, "synthetic", cache_frames=2)
    assert view.shape == frames.shape and view.dtype == np.float32 and view.ndim == 3
    assert not view._cache  # nothing computed yet
    frame = view[4]
    expected = place_crops(
        translate(frames[4], checkpoint, regions, device="cpu")[0], regions, (96, 160)
    )
    np.testing.assert_allclose(frame, expected, atol=1e-5)
    assert frame[95, 90] == 0.0 and frame[50, 40] > 0.0  # outside / inside the chambers
    np.testing.assert_allclose(view[4, 10:20, 5], expected[10:20, 5], atol=1e-5)
    assert view[1:3].shape == (2, 96, 160) and view[..., 0].shape == (10, 96)
    assert len(view._cache) <= 2
    single = ModelView(frames[0], checkpoint)
    assert single.shape == (96, 160) and np.asarray(single).shape == (96, 160)


def test_the_callers_autograd_state_is_kept_between_batches(checkpoint, frames):
    counting = iter_count(frames, checkpoint, batch_size=3, device="cpu")
    next(counting)
    next(counting)
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    counting.close()


@pytest.mark.parametrize("head", ["regressor", "density"])
def test_bfloat16_inner_convolutions_count_as_float32_does_to_a_hundredth(head):
    torch.manual_seed(0)
    model = TwinVAE(ModelConfig(head=head)).eval()
    x = torch.rand(8, 1, 128, 128)
    with torch.no_grad():
        exact = counting_path(model)(x)
        fast = counting_path(model, dtype=torch.bfloat16)
        estimate = fast(x)
    assert fast.convs[0].weight.dtype == torch.float32  # the image itself is read in float32
    assert {c.weight.dtype for c in fast.convs[1:]} == {torch.bfloat16}
    assert estimate.dtype == torch.float32
    torch.testing.assert_close(estimate, exact, rtol=0.01, atol=0.01)


def test_counts_use_bfloat16_only_where_the_cpu_computes_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    assert counting_dtype(cpu, mixed_precision=False) == torch.float32
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: False)
    assert counting_dtype(cpu) == torch.float32  # emulated bfloat16 is slower than float32
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: True)
    assert counting_dtype(cpu) == torch.bfloat16


def test_without_native_bfloat16_a_default_count_is_the_float32_count(
    checkpoint, frames, monkeypatch
):
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: False)
    default = count(frames, checkpoint, device="cpu", views=1).estimates
    exact = count(frames, checkpoint, device="cpu", views=1, mixed_precision=False).estimates
    np.testing.assert_array_equal(default, exact)
