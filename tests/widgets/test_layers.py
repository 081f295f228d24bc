import numpy as np

from napari_twinvae._widgets._layers import OWNER_KEY, find_owned, update_or_add


def test_update_or_add_owns_and_updates_in_place(make_napari_viewer):
    viewer = make_napari_viewer()
    source = viewer.add_image(np.zeros((2, 8, 8)), name="frames")
    users = viewer.add_image(np.ones((8, 8)), name="reconstruction")  # the user's own layer
    first = update_or_add(
        viewer, np.zeros((2, 8, 8)), {"name": "reconstruction"}, "image", "reconstruction", source
    )
    assert first is not users and first.metadata[OWNER_KEY]["role"] == "reconstruction"
    again = update_or_add(
        viewer, np.full((2, 8, 8), 3.0), {"name": "x"}, "image", "reconstruction", source
    )
    assert again is first and float(first.data.max()) == 3.0
    assert len(viewer.layers) == 3 and float(users.data.min()) == 1.0
    assert find_owned(viewer, "reconstruction", source) is first
    assert find_owned(viewer, "counts") is None
