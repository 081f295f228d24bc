import numpy as np
import pytest
import torch

from napari_twinvae.core.counts import paper_count_weights
from napari_twinvae.core.data import (
    MATCH_COUNTS_MIN_LABELS,
    Augmentation,
    NaturalSet,
    SyntheticSource,
    augment,
    natural_set,
)
from napari_twinvae.core.labels import Labels


def test_natural_set_flattens_frames_and_chambers_and_keeps_the_mask():
    crops = np.random.default_rng(0).random((3, 2, 128, 128), dtype=np.float32)
    counts = np.array([[1, 0], [4, 2], [0, 0]])
    labeled = np.array([[True, True], [False, True], [False, False]])
    natural = natural_set(crops, Labels(counts, labeled))
    assert natural.frames.shape == (6, 128, 128)
    np.testing.assert_array_equal(natural.frames[3], crops[1, 1])
    np.testing.assert_array_equal(natural.labeled, labeled.ravel())
    # a labeled zero stays a real 0; the 0 of an unlabeled frame means nothing (the mask says so)
    np.testing.assert_array_equal(natural.counts, [1, 0, 0, 2, 0, 0])


@pytest.mark.parametrize(
    ("crops", "counts", "message"),
    [
        (np.zeros((2, 1, 64, 64)), np.zeros((2, 1)), "chamber crops"),
        (np.zeros((2, 1, 128, 128)), np.zeros((3, 1)), "labels cover 3 frames"),
        (np.zeros((1, 1, 128, 128)), np.full((1, 1), 31), "0..30"),
        (np.full((1, 1, 128, 128), 2.0), np.zeros((1, 1)), "normalised"),
    ],
)
def test_natural_set_refuses_what_does_not_fit(crops, counts, message):
    with pytest.raises(ValueError, match=message):
        natural_set(crops, Labels(counts.astype(int), np.ones(counts.shape, bool)))


def _natural(counts, labeled, value=0.3):
    frames = np.full((len(counts), 128, 128), value, dtype=np.float32)
    return NaturalSet(frames, np.asarray(counts, dtype=np.int64), np.asarray(labeled, dtype=bool))


def test_synthetic_background_is_the_mean_of_labeled_frames_with_few_cells():
    natural = _natural([1, 9, 0, 2], [True, True, False, True])
    natural.frames[0] = 0.2  # few cells: in the background
    natural.frames[1] = 0.9  # many cells: left out
    natural.frames[2] = 0.7  # unlabeled: left out
    natural.frames[3] = 0.4
    source = SyntheticSource(natural, "pc", seed=0)
    np.testing.assert_allclose(source.background, 0.3, atol=1e-6)
    assert "2 labeled frames" in source.describe()["background"]


def test_synthetic_background_falls_back_to_the_median_without_few_cell_labels():
    natural = _natural([0, 0, 0], [False, False, False])
    natural.frames[:2] = 0.6
    assert np.allclose(SyntheticSource(natural).background, 0.6)


def test_synthetic_counts_follow_the_labels_only_when_there_are_enough():
    few = SyntheticSource(_natural([5] * 3, [True] * 3))
    np.testing.assert_allclose(few.config.count_weights, paper_count_weights())
    n = MATCH_COUNTS_MIN_LABELS
    many = SyntheticSource(_natural([5] * n, [True] * n))
    weights = np.asarray(many.config.count_weights)
    assert weights.argmax() == 5 and weights[5] > 0.3
    assert (weights[1:] > 0).all()  # widened: every count 1..30 still appears
    images, counts = many.images(200, epoch=1)
    assert images.shape == (200, 128, 128) and np.mean(counts == 5) > 0.2


def test_synthetic_images_are_fresh_per_epoch_and_repeat_for_a_seed():
    source = SyntheticSource(_natural([1], [True]), "bf", seed=3)
    a, ca = source.images(4, epoch=1)
    b, cb = SyntheticSource(_natural([1], [True]), "bf", seed=3).images(4, epoch=1)
    c, _ = source.images(4, epoch=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ca, cb)
    assert not np.array_equal(a, c)


def _dihedral(image):
    out = []
    for k in range(4):
        turned = torch.rot90(image, k, dims=(-2, -1))
        out += [turned, torch.flip(turned, dims=(-1,))]
    return out


def test_flips_and_quarter_turns_alone_move_pixels_exactly():
    images = torch.rand(16, 1, 128, 128, generator=torch.Generator().manual_seed(2))
    plain = Augmentation(max_rotation=0.0, crop_min=1.0, crop_max=1.0, noise_std=0.0)
    gen = torch.Generator().manual_seed(0)
    out = augment(images, gen, plain)
    for before, after in zip(images, out, strict=True):
        assert any(torch.allclose(after, d, atol=1e-5) for d in _dihedral(before))
    assert not torch.equal(out, images)  # some of the 16 did change


def test_an_exact_share_keeps_those_images_pixel_for_pixel():
    images = torch.rand(64, 1, 128, 128, generator=torch.Generator().manual_seed(3))
    out = augment(images, torch.Generator().manual_seed(0), Augmentation(exact_share=0.5))
    exact = [
        any(torch.allclose(after, d, atol=1e-5) for d in _dihedral(before))
        for before, after in zip(images, out, strict=True)
    ]
    assert 16 <= sum(exact) <= 48  # about half kept their pixels, the rest were resampled
    everything = augment(images, torch.Generator().manual_seed(0), Augmentation(exact_share=1.0))
    for before, after in zip(images, everything, strict=True):
        assert any(torch.allclose(after, d, atol=1e-5) for d in _dihedral(before))


def test_augmentation_keeps_a_cell_inside_and_values_in_range():
    images = torch.zeros(32, 1, 128, 128)
    images[:, :, 60:68, 60:68] = 1.0  # a cell in the middle of the chamber
    out = augment(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    mass = (out > 0.5).sum(dim=(1, 2, 3)).float()
    # a window of 0.9-1.1 of the side scales the cell's area by 1/side^2 (about 0.8-1.2x),
    # the same on average; the cell never leaves
    assert bool(((mass > 0.65 * 64) & (mass < 1.45 * 64)).all())
    assert 0.9 * 64 < float(mass.mean()) < 1.15 * 64
    noise = out[:, :, :20, :20]
    assert 0.001 < float(noise.std()) < 0.004  # additive noise of std 0.0025, clipped at 0


def test_augmentation_repeats_for_a_seeded_generator():
    images = torch.rand(4, 1, 128, 128, generator=torch.Generator().manual_seed(2))
    a = augment(images, torch.Generator().manual_seed(5))
    b = augment(images, torch.Generator().manual_seed(5))
    c = augment(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augmentation_config_is_checked():
    with pytest.raises(ValueError, match="crop"):
        Augmentation(crop_min=0.9, crop_max=0.8)
    with pytest.raises(ValueError, match="crop"):
        Augmentation(crop_min=0.9, crop_max=2.0)
    with pytest.raises(ValueError, match="exact_share"):
        Augmentation(exact_share=1.5)
