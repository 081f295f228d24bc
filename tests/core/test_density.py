import dataclasses

import numpy as np
import pytest
import torch

from napari_twinvae.core.config import ModelConfig
from napari_twinvae.core.count_paths import DensityPath
from napari_twinvae.core.data import Augmentation, NaturalSet, augment, augment_with_cells
from napari_twinvae.core.density import (
    AMPLITUDE,
    cells_per_image,
    density_targets,
    find_peaks,
    map_counts,
    pad_points,
    peak_counts,
)
from napari_twinvae.core.io import default_model_path, load_checkpoint, save_checkpoint
from napari_twinvae.core.labels import labels_from_points
from napari_twinvae.core.model import TwinVAE
from napari_twinvae.core.predict import count
from napari_twinvae.core.synthetic import SynthConfig, generate
from napari_twinvae.core.train import TrainConfig, train

TINY = ModelConfig(
    encoder_channels=(8, 16, 32, 32), shared_channels=32, latent_dim=16, regressor_hidden=(16,)
)


def test_each_target_map_sums_to_its_cells_inside_the_crop_also_at_the_border():
    points = torch.tensor([[[0.0, 0.0], [127.0, 127.0], [64.0, 3.0], [200.0, 5.0]]])
    mask = torch.tensor([[True, True, True, True]])
    maps = density_targets(points, mask, sigma=4.0)
    assert maps.shape == (1, 62, 62)
    assert map_counts(maps).item() == pytest.approx(3.0, abs=1e-4)  # the point at y 200 is out
    assert maps.min() >= 0 and maps.sum() == pytest.approx(3 * AMPLITUDE, rel=1e-5)
    assert map_counts(density_targets(points, torch.zeros_like(mask))).item() == 0.0


def test_peaks_find_separate_cells_where_they_are():
    where = np.array([[20.0, 30.0], [60.0, 90.0], [100.0, 40.0]], np.float32)
    points, mask = pad_points([where, np.zeros((0, 2))])
    peaks = find_peaks(density_targets(points, mask, sigma=3.0))
    assert peak_counts(peaks, 2).tolist() == [3, 0]
    found = peaks.yx[np.lexsort(peaks.yx.T[::-1])]
    np.testing.assert_allclose(found, where[np.lexsort(where.T[::-1])], atol=0.6)


def test_cell_centres_move_with_the_augmented_images():
    generator = torch.Generator().manual_seed(3)
    images = torch.zeros(16, 1, 128, 128)
    images[:, 0, 28:33, 88:93] = 1.0  # a square around (30, 90)
    points = torch.tensor([[[30.0, 90.0]]]).repeat(16, 1, 1)
    mask = torch.ones(16, 1, dtype=torch.bool)
    out, moved, kept = augment_with_cells(
        images, points, mask, generator, Augmentation(noise_std=0.0)
    )
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    mass = out[:, 0].sum((1, 2))
    centroid = torch.stack([(out[:, 0] * yy).sum((1, 2)), (out[:, 0] * xx).sum((1, 2))], 1)
    np.testing.assert_allclose(moved[:, 0], centroid / mass[:, None], atol=0.1)
    assert kept.all()
    # the images are those of augment() for the same draws
    assert torch.equal(
        out, augment(images, torch.Generator().manual_seed(3), Augmentation(noise_std=0.0))
    )


def test_cells_per_image_splits_a_synthetic_batch():
    batch = generate(5, SynthConfig(), rng=1, counts=[0, 3, 1, 0, 2])
    cells = cells_per_image(batch.centres, 5)
    assert [len(c) for c in cells] == [0, 3, 1, 0, 2]


def test_clicked_points_become_cells_in_crop_pixels():
    points = np.array([[0, 10.0, 20.0], [0, 50.0, 60.0], [2, 5.0, 5.0]])
    labels = labels_from_points(
        points, marked=[1], n_frames=3, regions=[(0, 0, 64, 64)], frame_shape=(64, 128)
    )
    assert labels.counts[:, 0].tolist() == [2, 0, 1]
    np.testing.assert_allclose(labels.cells[0, 0], [[20.5, 40.5], [100.5, 120.5]])
    assert labels.cells[1, 0].shape == (0, 2)


def test_a_density_model_counts_with_the_calibrated_sum_of_its_map():
    torch.manual_seed(0)
    model = TwinVAE(dataclasses.replace(TINY, head="density")).eval()
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        model.density_head.scale.fill_(2.0)
        model.density_head.offset.fill_(0.5)
        sums = map_counts(model.density(x))
        np.testing.assert_allclose(model.count(x), 0.5 + 2.0 * sums, rtol=1e-5)
        np.testing.assert_allclose(DensityPath(model)(x), model.count(x), rtol=1e-4, atol=1e-4)
    out = model(x, "synthetic", decode=False)
    assert out.density.shape == (3, 62, 62) and out.reconstruction is None


def test_a_transfer_adds_a_density_head_and_learns_from_the_cells(tmp_path):
    batch = generate(24, SynthConfig(), rng=0)
    natural = NaturalSet(
        batch.images, batch.counts, np.arange(24) < 16, tuple(cells_per_image(batch.centres, 24))
    )
    config = TrainConfig(
        init="scratch",
        model=TINY,
        head="density",
        epochs=2,
        batch_size=8,
        regressor_delay=0,
        device="cpu",
    )
    result = train(natural, config)
    assert result.model.config.head == "density" and result.model.density_head is not None
    losses = result.history[-1]["losses"]
    assert losses["natural"]["density"] > 0 and losses["synthetic"]["density"] > 0
    assert np.isfinite(result.best["bias"])
    path = tmp_path / "density.pt"
    save_checkpoint(path, result.model, normalization=result.normalization)
    loaded = load_checkpoint(path)
    assert loaded.config.head == "density"
    counted = count(batch.images[:4], loaded, device="cpu")
    assert counted.estimates.shape == (4, 1) and np.isfinite(counted.estimates).all()


@pytest.mark.parametrize("clicked, head", [(True, "density"), (False, "regressor")])
def test_a_transfer_counts_with_a_density_head_when_the_labels_mark_cells(tmp_path, clicked, head):
    start = tmp_path / "start.pt"
    save_checkpoint(start, TwinVAE(TINY))  # the regressor, as the shipped model
    batch = generate(12, SynthConfig(), rng=0)
    cells = tuple(cells_per_image(batch.centres, 12)) if clicked else None
    natural = NaturalSet(batch.images, batch.counts, np.ones(12, dtype=bool), cells)
    config = TrainConfig(init=str(start), epochs=1, batch_size=8, device="cpu")
    result = train(natural, config)
    assert result.model.config.head == head
    assert result.summary()["config"]["head"] is None  # the choice was left to the run
    kept = TrainConfig(init=str(start), epochs=1, batch_size=8, device="cpu", head="regressor")
    assert train(natural, kept).model.config.head == "regressor"


def test_a_model_file_from_before_the_density_head_loads_and_counts_with_the_regressor(tmp_path):
    path = save_checkpoint(tmp_path / "old.pt", TwinVAE(TINY))
    payload = torch.load(path, weights_only=True)
    for key in ("head", "density_sigma"):  # the fields files written before the head lack
        del payload["model_config"][key]
    torch.save(payload, path)
    old = load_checkpoint(path)
    assert old.config.head == "regressor" and old.model.density_head is None
    frames = generate(3, SynthConfig(), rng=0).images
    assert np.isfinite(count(frames, old, device="cpu").estimates).all()


def test_the_default_model_counts_with_a_density_head_and_finds_the_cells():
    shipped = load_checkpoint(default_model_path())
    assert shipped.config.head == "density" and shipped.model.density_head is not None
    batch = generate(8, SynthConfig.preset("pc"), rng=3)
    found = count(batch.images, shipped, device="cpu", cells=True)
    per_frame = np.bincount(found.cells[:, 0].astype(int), minlength=8)
    assert np.abs(per_frame - batch.counts).mean() <= 1.0, (per_frame, batch.counts)
    assert np.abs(found.estimates[:, 0] - batch.counts).mean() <= 1.0
