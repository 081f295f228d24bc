import numpy as np
import pytest

from napari_twinvae.core.realism import RealismConfig, harden, smooth_field
from napari_twinvae.core.synthetic import SynthConfig, generate


def test_harden_is_seeded_shaped_and_in_range():
    batch = generate(16, SynthConfig.preset("pc"), rng=1)
    first = harden(batch.images, rng=3)
    assert first.shape == batch.images.shape and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, harden(batch.images, rng=3))
    assert not np.array_equal(first, harden(batch.images, rng=4))
    assert np.abs(first - batch.images).mean() > 0.01  # it really changes the pictures
    np.testing.assert_array_equal(
        batch.images, generate(16, SynthConfig.preset("pc"), rng=1).images
    )


def test_no_distortion_settings_keep_the_image():
    images = generate(4, SynthConfig.preset("bf"), rng=0).images
    plain = RealismConfig(
        illumination=0,
        texture=0,
        halo=0,
        debris_max=0,
        blur_sigma_max=0,
        noise_std_max=0,
        gamma_range=(1, 1),
        contrast_range=(1, 1),
        invert_probability=0,
    )
    np.testing.assert_allclose(harden(images, plain), images, atol=1e-6)


def test_smooth_field_and_config_checks():
    field = smooth_field(2, 3, np.random.default_rng(0))
    assert field.shape == (2, 128, 128) and np.abs(field).max() <= 1
    assert np.abs(np.diff(field, axis=-1)).max() < 0.2  # smooth: no jumps between pixels
    with pytest.raises(ValueError):
        RealismConfig(illumination=1.5)
    with pytest.raises(ValueError, match="shape"):
        harden(np.zeros((2, 64, 64)))
    assert RealismConfig.from_json(RealismConfig().to_json()) == RealismConfig()


def test_hardened_scenes_are_new_each_epoch_and_the_same_for_a_seed():
    from napari_twinvae.core.pretrain import HardenedMix, realistic_set

    source = HardenedMix(seed=3)
    frames, counts = source.images(6, epoch=2)
    again, same_counts = HardenedMix(seed=3).images(6, epoch=2)
    later, _ = source.images(6, epoch=3)
    assert frames.shape == (6, 128, 128) and frames.dtype == np.float32
    assert np.array_equal(frames, again) and np.array_equal(counts, same_counts)
    assert not np.array_equal(frames, later)
    assert counts.min() >= 0 and counts.max() <= 30
    held_out = realistic_set(6, seed=3)  # the fixed set draws from its own stream
    assert held_out.labeled.all() and not np.array_equal(held_out.frames, frames)


def test_a_clean_share_keeps_that_many_scenes_unhardened():
    from napari_twinvae.core.intensity import normalize_frames
    from napari_twinvae.core.pretrain import HardenedMix, _mixed, _preset_configs, realistic_set

    n = 200
    frames, counts = HardenedMix(seed=4, clean_share=0.3).images(n, epoch=1)
    # The same scenes, drawn from the same stream, before any hardening.
    rng = np.random.default_rng([4, 4099, 1])
    clean, same_counts, _ = _mixed(n, _preset_configs(), rng)
    assert np.array_equal(counts, same_counts)
    kept = np.all(np.isclose(frames, normalize_frames(clean, None), atol=1e-6), axis=(1, 2))
    assert 0.2 < kept.mean() < 0.4
    # No share, no extra draw: the images of earlier recipes stay what they were.
    plain = realistic_set(8, seed=2)
    assert np.array_equal(realistic_set(8, seed=2, clean_share=0.0).frames, plain.frames)
    with pytest.raises(ValueError, match="clean_share"):
        HardenedMix(clean_share=1.5)


def test_touching_reaches_both_twins_training_scenes():
    from napari_twinvae.core.pretrain import HardenedMix, PresetMix

    for mix in (PresetMix(seed=1, touching=0.3), HardenedMix(seed=1, touching=0.3)):
        assert all(config.touching == 0.3 for config in mix.configs)
        assert mix.describe()["touching"] == 0.3
    # the same seed without daughters draws other scenes
    a, _ = PresetMix(seed=1, touching=0.3).images(16, epoch=0)
    b, _ = PresetMix(seed=1).images(16, epoch=0)
    assert not np.array_equal(a, b)


def test_mixed_and_hardened_batches_keep_each_cells_centre_with_its_image():
    from napari_twinvae.core.counts import counts_from_centres
    from napari_twinvae.core.pretrain import HardenedMix, PresetMix

    for source in (PresetMix(seed=2), HardenedMix(seed=2, clean_share=0.5)):
        batch = source.batch(24, epoch=1)
        assert np.array_equal(counts_from_centres(batch.centres, 24), batch.counts)
        images, counts = source.images(24, epoch=1)
        assert np.array_equal(images, batch.images) and np.array_equal(counts, batch.counts)
