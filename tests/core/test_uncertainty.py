"""Uncertainty per count, growth-series flags and the "label next" ranking (core.uncertainty)."""

import csv

import numpy as np
import pytest
import torch

from napari_twinvae.core.count_paths import CountingPath, averaged_count, spread_count
from napari_twinvae.core.io import load_checkpoint
from napari_twinvae.core.labels import read_labels
from napari_twinvae.core.metrics import round_counts
from napari_twinvae.core.predict import count, write_counts_csv
from napari_twinvae.core.uncertainty import (
    DEFAULT_CALIBRATION,
    REGRESSOR_CALIBRATION,
    SIGNALS,
    Calibration,
    calibration_curve,
    calibration_of,
    check_order,
    features,
    fit_calibration,
    label_next,
    read_counts_csv,
    rescaled,
    series_flags,
    top_error_share,
)
from tests._checkpoints import density_checkpoint, small_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return load_checkpoint(small_checkpoint(tmp_path_factory.mktemp("model") / "small.pt"))


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 4096, (12, 96, 160), dtype=np.uint16)


REGIONS = [(0, 0, 96, 80), (0, 80, 96, 160)]


def test_count_returns_an_uncertainty_per_frame_and_chamber(checkpoint, frames):
    result = count(frames, checkpoint, REGIONS, device="cpu")
    assert result.uncertainty.shape == result.counts.shape == (12, 2)
    assert np.all((result.uncertainty >= 0) & (result.uncertainty <= 1))
    assert result.signals.shape == (12, 2, 3) and np.all(result.signals[..., :2] >= 0)
    # the same numbers again (seeded latent samples), and the counts are the plain ones
    again = count(frames, checkpoint, REGIONS, device="cpu")
    np.testing.assert_array_equal(result.uncertainty, again.uncertainty)
    small_batches = count(frames, checkpoint, REGIONS, device="cpu", batch_size=3)
    np.testing.assert_allclose(small_batches.uncertainty, result.uncertainty, atol=1e-3)
    plain = count(frames, checkpoint, REGIONS, device="cpu", uncertainty=False)
    np.testing.assert_array_equal(plain.estimates, result.estimates)
    assert plain.uncertainty is None and plain.signals is None


def test_the_spread_is_that_of_the_orientations_and_the_latent_samples(checkpoint):
    path = CountingPath(checkpoint.model)
    x = torch.rand(5, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        mean, signals = spread_count(path, x, 8)
        views = torch.stack([averaged_count(path, x.flip(-1), 1), path(x)])
        one_view, one = spread_count(path, x, 1)
        _, first_three = spread_count(path, x[:3], 8)
    torch.testing.assert_close(mean, averaged_count(path, x, 8))
    assert torch.all(signals[:, 0] > 0) and torch.all(signals[:, 1] > 0)
    assert torch.all(one[:, 0] == 0)  # one view: no spread over views
    torch.testing.assert_close(one[:, 1], signals[:, 1])  # latent: the first view, same draws
    torch.testing.assert_close(one_view, views[1])
    torch.testing.assert_close(first_three, signals[:3], equal_nan=True)  # whatever the batch
    assert torch.isnan(signals[:, 2]).all()  # the regressor's path has no peaks


def test_a_signal_the_model_cannot_give_weighs_as_an_average_one(tmp_path, frames):
    ckpt = load_checkpoint(density_checkpoint(tmp_path / "dense.pt"))
    result = count(frames[:4], ckpt, device="cpu")
    assert np.isnan(result.signals[..., 1]).all()  # a density head has no latent code
    assert np.isfinite(result.signals[..., [0, 2]]).all()
    feats = features(result.estimates, result.signals)
    # read by the regressor's fit, which weighs the latent spread the density head cannot give
    fit = REGRESSOR_CALIBRATION
    at_the_mean = feats.copy()
    at_the_mean[..., 2] = fit.mean[2]
    np.testing.assert_allclose(fit.score(feats), fit.score(at_the_mean))
    # no latent spread is not "certain": an absent signal once made every count look sure
    no_spread = at_the_mean.copy()
    no_spread[..., 2] = np.log(0.02)
    assert np.all(fit.score(no_spread) < fit.score(feats) - 1)


def test_a_fit_gives_a_missing_signal_no_weight():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 5))
    feats[:, 3] = np.nan
    wrong = (feats[:, 0] + 0.3 * rng.normal(size=200)) > 0
    fit = fit_calibration(feats, wrong)
    assert fit.weights[3] == 0.0 and fit.mean[3] == 0.0 and fit.scale[3] == 1.0
    assert np.all(np.isfinite(fit.probability(feats)))


def test_a_density_model_says_how_far_its_peaks_are_from_its_sum(tmp_path, frames):
    ckpt = load_checkpoint(density_checkpoint(tmp_path / "dense.pt"))
    result = count(frames[:4], ckpt, device="cpu", cells=True)
    found = np.bincount(result.cells[:, 0].astype(int), minlength=4)
    gap = np.abs(found - _first_view_estimates(ckpt, frames[:4]))
    np.testing.assert_allclose(result.signals[:, 0, 2], gap, atol=1e-3)


def _first_view_estimates(ckpt, frames):
    return count(frames, ckpt, device="cpu", views=1, uncertainty=False).estimates[:, 0]


def test_the_calibration_fit_finds_what_predicts_a_wrong_count():
    rng = np.random.default_rng(0)
    n = 4000
    estimates = rng.uniform(0, 20, n)
    signals = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0, 1, n), np.zeros(n)])
    feats = features(estimates, signals)
    # wrong more often where the views disagree, whatever the other signals say
    views = feats[:, SIGNALS.index("views")]
    wrong = rng.random(n) < 1 / (1 + np.exp(-2 * (views - views.mean())))
    fit = fit_calibration(feats, wrong)
    assert fit.weights[SIGNALS.index("views")] > 1.0
    assert abs(fit.weights[SIGNALS.index("latent")]) < 0.2
    assert fit.weights[SIGNALS.index("peaks")] == 0.0  # a constant signal
    p = fit.probability(feats)
    for predicted, observed, size in calibration_curve(p, wrong, bins=5):
        assert abs(predicted - observed) < 0.05 or size < 100
    assert top_error_share(p, wrong) > 0.15
    assert Calibration.from_dict(fit.to_dict()) == fit


def test_a_stored_calibration_is_used_and_the_default_otherwise(checkpoint, frames):
    assert calibration_of({}) is DEFAULT_CALIBRATION
    assert calibration_of({}, density=False) is REGRESSOR_CALIBRATION
    certain = Calibration((0.0,) * 5, -20.0, (0.0,) * 5, (1.0,) * 5)
    assert calibration_of({"uncertainty": certain.to_dict()}) == certain
    result = count(frames[:2], checkpoint, device="cpu", calibration=certain)
    assert np.all(result.uncertainty < 1e-6)


def test_top_error_share():
    uncertainty = np.arange(20, dtype=float)
    wrong = np.zeros(20, dtype=bool)
    wrong[[19, 18, 3, 0]] = True
    assert top_error_share(uncertainty, wrong) == 0.5  # the top 2 of 20 hold 2 of 4 errors
    assert np.isnan(top_error_share(uncertainty, np.zeros(20, dtype=bool)))


def test_series_flags_mark_jumps_that_come_back_and_drops_never_the_counts():
    counts = np.array([1, 1, 2, 2, 1, 2, 2, 3, 3, 3, 3, 6, 3, 3, 3, 3, 3, 3, 1, 1])
    flags = series_flags(counts)
    assert flags[4] == "jump"  # a dip of one frame
    assert flags[11] == "jump"  # a bump that comes back
    assert flags[12] == "drop"  # 6 -> 3, the frame after the bump
    assert flags[18] == "drop"  # 3 -> 1 and it stays
    assert set(np.flatnonzero(flags != "")) == {4, 11, 12, 18}
    two = series_flags(np.column_stack([counts, np.arange(20)]))
    assert two.shape == (20, 2) and np.all(two[:, 1] == "")  # steady growth is never flagged


def test_result_series_flags_follow_frame_order(checkpoint, frames):
    result = count(frames, checkpoint, device="cpu", frame_indices=[3, 1, 2, 0])
    result.counts = np.array([[2], [2], [3], [2]])  # frames 3, 1, 2, 0: frame 2 is a bump
    assert result.series_flags[:, 0].tolist() == ["", "", "jump", ""]


def test_label_next_picks_uncertain_frames_spread_over_the_series():
    uncertainty = np.full(100, 0.1)
    uncertainty[40:50] = np.linspace(0.9, 0.8, 10)  # one bad stretch
    uncertainty[70] = 0.5
    picks = label_next(uncertainty, labeled=[0, 99], n=3)
    assert picks[0] == 40
    assert 70 in picks  # not three neighbours of frame 40
    assert len(set(picks.tolist()) & set(range(38, 53))) <= 2
    assert not set(picks.tolist()) & {0, 99}
    # a frame is labeled whole: its most uncertain chamber counts; NaN frames are never picked
    per_chamber = np.column_stack([np.zeros(5), [0.1, 0.9, np.nan, 0.2, 0.3]])
    per_chamber[2] = np.nan
    assert label_next(per_chamber, n=10).tolist()[0] == 1
    assert 2 not in label_next(per_chamber, n=10).tolist()
    # when only frames without an uncertainty are left, the ranking ends: no repeats
    assert label_next([0.5, np.nan, 0.2], labeled=[0], n=5).tolist() == [2]


def test_check_order_puts_flagged_and_uncertain_counts_first():
    uncertainty = np.array([[0.1, 0.7], [0.9, 0.2], [0.3, 0.1]])
    flags = np.array([["", ""], ["", ""], ["jump", ""]], dtype=object)
    assert check_order(uncertainty, flags) == [(2, 0), (1, 0), (0, 1)]


def test_counts_csv_has_the_new_columns_and_an_old_csv_still_reads(checkpoint, frames, tmp_path):
    result = count(frames[:4], checkpoint, REGIONS, device="cpu")
    write_counts_csv(tmp_path / "new.csv", result)
    table = read_counts_csv(tmp_path / "new.csv")
    np.testing.assert_allclose(table.uncertainty.reshape(4, 2), result.uncertainty, atol=1e-3)
    assert table.series_flag.tolist() == result.series_flags.reshape(-1).tolist()
    old = tmp_path / "old.csv"
    old.write_text("frame,chamber,count,estimate,flag\n0,0,3,3.1000,\n1,0,4,3.9000,\n")
    table = read_counts_csv(old)
    assert table.counts.tolist() == [3, 4] and np.all(np.isnan(table.uncertainty))
    assert table.series_flag.tolist() == ["", ""]
    # the labels reader takes a one-chamber counts CSV with the new columns as frame,count
    single = count(frames[:3], checkpoint, device="cpu")
    write_counts_csv(tmp_path / "labels.csv", single)
    assert read_labels(tmp_path / "labels.csv") == {t: int(single.counts[t, 0]) for t in range(3)}
    with pytest.raises(ValueError, match="no column count"):
        (tmp_path / "bad.csv").write_text("frame,cells\n0,3\n")
        read_counts_csv(tmp_path / "bad.csv")
    with open(tmp_path / "new.csv", newline="") as f:
        assert next(csv.reader(f))[-2:] == ["uncertainty", "series_flag"]


def _labels_half_right(model, images):
    """Counts for ``images``: ``model``'s own rounded count on even frames, two more on odd ones."""
    from napari_twinvae.core.count_paths import averaged_count, counting_path

    with torch.inference_mode():
        own = averaged_count(counting_path(model), torch.from_numpy(images).unsqueeze(1), 8)
    return round_counts(own.numpy()) + 2 * (np.arange(len(images)) % 2)


def test_a_training_run_rescales_the_calibration_to_its_held_out_frames(tmp_path, hold_out_few):
    from napari_twinvae.core.data import NaturalSet
    from napari_twinvae.core.synthetic import SynthConfig, generate
    from napari_twinvae.core.train import Training
    from tests._checkpoints import small_model, tiny_train_config

    images = generate(32, SynthConfig(), rng=0, counts=np.full(32, 4)).images
    counts = _labels_half_right(small_model(), images)
    natural = NaturalSet(images, counts, np.ones(32, dtype=bool))
    start = small_checkpoint(tmp_path / "start.pt")
    # a rate too small to change the model: its held-out counts stay half right
    config = tiny_train_config(init=str(start), epochs=1, learning_rate=1e-9)
    training = Training(natural, config)
    for _ in training.run():
        pass
    own = Calibration.from_dict(training.result.summary()["uncertainty"])
    assert own != REGRESSOR_CALIBRATION and "8 held-out frames" in own.source
    path = training.save(tmp_path / "trained.pt")
    assert calibration_of(load_checkpoint(path).summary) == own
    frames = (images * 4095).astype(np.uint16)
    by_own = count(frames, path, device="cpu")
    # the small model counts with the regressor: the run rescales the regressor's shipped fit
    by_default = count(frames, path, device="cpu", calibration=REGRESSOR_CALIBRATION)
    assert not np.allclose(by_own.uncertainty, by_default.uncertainty)
    # the ranking is the shipped one's; only the level moves (to about half wrong here)
    order = np.argsort(by_default.uncertainty[:, 0])
    assert np.all(np.diff(by_own.uncertainty[order, 0]) >= -1e-3)  # float32 rounding


def test_held_out_counts_all_wrong_say_how_often_not_which():
    from napari_twinvae.core.run_calibration import fit_run_calibration
    from napari_twinvae.core.synthetic import SynthConfig, generate
    from tests._checkpoints import small_model

    model = small_model()
    images = generate(12, SynthConfig(), rng=0, counts=np.full(12, 4)).images
    counts = _labels_half_right(model, images)
    fit = fit_run_calibration(model, images, counts + 9, views=8)  # every count wrong
    assert np.all(fit.probability(features(np.full(3, 2.0), np.zeros((3, 3)))) > 0.8)
    assert fit_run_calibration(model, images[:0], counts[:0], views=8) is None


def test_rescaling_keeps_the_ranking_and_moves_the_level():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(400, len(SIGNALS)))
    base = DEFAULT_CALIBRATION
    p = base.probability(feats)
    wrong = rng.random(400) < 0.3 * p  # wrong far less often than the base says
    fit = rescaled(base, feats, wrong, "test")
    q = fit.probability(feats)
    assert abs(q.mean() - wrong.mean()) < 0.05 < abs(p.mean() - wrong.mean())
    assert np.all(np.diff(q[np.argsort(p)]) >= -1e-9)
