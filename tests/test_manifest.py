import npe2
import numpy as np

PLUGIN = "napari-twinvae"


def test_manifest_is_valid():
    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    assert manifest.name == PLUGIN
    assert manifest.display_name


def test_napari_discovers_the_plugin(make_napari_viewer):
    make_napari_viewer()
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert pm.get_manifest(PLUGIN).name == PLUGIN


def test_the_no_cells_marks_survive_napari_save_and_open(make_napari_viewer, tmp_path):
    # found on a new-user walk: saving the annotation through napari's File menu lost them
    from napari.plugins import _npe2

    from napari_twinvae._widgets._annotation import EMPTY_FRAMES_KEY
    from napari_twinvae.core.labels import load_annotation

    viewer = make_napari_viewer()
    cells = viewer.add_points(
        [[0, 5, 5], [2, 6, 6]], ndim=3, name="movie cells", metadata={EMPTY_FRAMES_KEY: [1, 3]}
    )
    filters, _ = _npe2.file_extensions_string_for_layers([cells])
    assert "cells with 'no cells' marks (*.cells.csv)" in filters  # offered in the Save dialog
    target = tmp_path / "movie.cells.csv"
    viewer.layers.selection = {cells}
    viewer.layers.save(str(target), selected=True)
    assert load_annotation(target).labeled_frames.tolist() == [0, 1, 2, 3]
    assert PLUGIN in _npe2.get_readers(str(target))  # offered when napari opens the file
    viewer.layers.clear()
    (opened,) = viewer.open(target, plugin=PLUGIN)
    assert opened.name == "movie" and opened.metadata[EMPTY_FRAMES_KEY] == [1, 3]
    np.testing.assert_allclose(opened.data, cells.data)
