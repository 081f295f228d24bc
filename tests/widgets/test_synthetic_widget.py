import numpy as np
import pytest

from napari_twinvae._widgets._layers import OWNER_KEY
from napari_twinvae._widgets._synthetic import (
    CENTRES_ROLE,
    IMAGES_ROLE,
    sample_bright_field,
    sample_phase_contrast,
    synthetic_cells,
)
from napari_twinvae.core.synthetic import SynthConfig, generate

PLUGIN = "napari-twinvae"


def _role(layer):
    return layer.metadata[OWNER_KEY]["role"]


def test_widget_adds_images_and_true_centres_and_shows_the_frame_count(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = synthetic_cells()
    viewer.window.add_dock_widget(widget)
    widget(preset="bf", n_images=6, seed=3)
    images, points = viewer.layers
    assert _role(images) == IMAGES_ROLE and _role(points) == CENTRES_ROLE
    assert images.data.shape == (6, 128, 128)
    counts = np.asarray(images.metadata["counts"])
    np.testing.assert_array_equal(counts, generate(6, SynthConfig.preset("bf"), rng=3).counts)
    np.testing.assert_array_equal(np.bincount(points.data[:, 0].astype(int), minlength=6), counts)
    np.testing.assert_array_equal(points.features["count"], counts[points.features["frame"]])
    viewer.dims.set_current_step(0, 4)
    assert widget[-1].value == f"cells in frame 4: {counts[4]}"
    viewer.dims.set_current_step(0, 1)
    assert widget[-1].value == f"cells in frame 1: {counts[1]}"


def test_widget_uses_the_users_frames_and_labeled_counts(make_napari_viewer):
    viewer = make_napari_viewer()
    frames = viewer.add_image(np.zeros((3, 64, 64), dtype=np.uint8), name="my frames")
    labels = viewer.add_points(np.array([[0, 5, 5], [0, 9, 9], [2, 5, 5], [2, 7, 7]]), name="mine")
    widget = synthetic_cells()
    layers = widget(
        n_images=30, seed=1, background=frames, distribution="match labeled points", labeled=labels
    )
    images, meta, kind = layers[0]
    assert kind == "image" and set(meta["metadata"]["counts"]) <= {
        0,
        2,
    }  # frames 0, 1, 2 hold 2, 0, 2 cells
    assert np.median(images) == 0.0  # the user's dark chamber
    with pytest.raises(ValueError, match="Points layer"):
        widget(n_images=2, distribution="match labeled points", labeled=None)


def test_the_sample_time_series_open_through_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_pc")
    viewer.open_sample(PLUGIN, "synthetic_bf")
    roles = [_role(layer) for layer in viewer.layers]
    assert roles == [IMAGES_ROLE, CENTRES_ROLE, IMAGES_ROLE, CENTRES_ROLE]
    for layer in viewer.layers[::2]:
        counts = layer.metadata["counts"]
        assert layer.data.shape == (60, 128, 128) and counts[0] == 1 and counts[-1] >= 12


def test_widget_docks_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthetic cells")
    assert dock is not None
    viewer.add_image(
        sample_phase_contrast()[0][0], metadata=sample_phase_contrast()[0][1]["metadata"]
    )
    viewer.dims.set_current_step(0, 59)
    assert widget[-1].value.startswith("cells in frame 59:")


def test_samples_are_layer_data_tuples():
    for sample in (sample_phase_contrast, sample_bright_field):
        (images, image_meta, image_kind), (points, points_meta, points_kind) = sample()
        assert image_kind == "image" and points_kind == "points"
        assert images.shape == (60, 128, 128) and points.shape[1] == 3
        counts = image_meta["metadata"]["counts"]
        assert len(points) == sum(counts) and points_meta["metadata"]["counts"] == counts


def test_frame_count_follows_the_topmost_visible_stack(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = synthetic_cells()
    viewer.window.add_dock_widget(widget)
    viewer.open_sample(PLUGIN, "synthetic_pc")
    widget(n_images=3, seed=0)
    top = viewer.layers[-2]
    viewer.dims.set_current_step(0, 2)
    assert widget[-1].value == f"cells in frame 2: {top.metadata['counts'][2]}"
    top.visible = False
    viewer.dims.set_current_step(0, 30)
    pc_counts = viewer.layers[0].metadata["counts"]
    assert widget[-1].value == f"cells in frame 30: {pc_counts[30]}"
