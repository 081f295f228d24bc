import time

import numpy as np

from napari_twinvae._widgets._layers import (
    OWNER_KEY,
    current_frame,
    find_owned,
    frame_axis,
    go_to_frame,
    owner_tag,
    role_of,
    update_or_add,
)


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


def test_role_of_reads_only_the_plugins_mark(make_napari_viewer):
    viewer = make_napari_viewer()
    ours = viewer.add_points(metadata=owner_tag("cells"), name="a")
    users = viewer.add_points(metadata={OWNER_KEY: "not a tag"}, name="counts")
    assert role_of(ours) == "cells" and role_of(users) is None


def test_current_frame_follows_the_images_scale_and_translate(make_napari_viewer):
    viewer = make_napari_viewer()
    stack = viewer.add_image(np.zeros((10, 8, 8)), scale=(2, 1, 1), translate=(4, 0, 0))
    single = viewer.add_image(np.zeros((8, 8)))
    go_to_frame(viewer, stack, 7)
    assert viewer.dims.point[0] == 4 + 7 * 2
    assert current_frame(viewer, stack) == 7 and current_frame(viewer, single) == 0
    kept = frame_axis(stack)  # what the count dock keeps with its results
    assert current_frame(viewer, kept) == 7
    assert current_frame(viewer, kept, frames=5) == 4  # within the frames asked for


def test_a_runtime_error_in_a_job_is_reported_not_swallowed(qtbot):
    """superqt takes RuntimeErrors for deleted workers; a job's own must still reach errored."""
    from napari_twinvae._widgets._workers import JobFailed, start_worker

    def job():
        yield 1
        raise RuntimeError("out of GPU memory")

    errors = []
    with qtbot.waitCallback(timeout=5000) as finished:  # connected before the worker starts
        worker = start_worker(job, errored=errors.append, finished=finished)
    assert worker is not None
    assert len(errors) == 1 and isinstance(errors[0], JobFailed)
    assert "out of GPU memory" in str(errors[0])


def test_a_runner_tidies_up_before_the_dock_resets(qtbot):
    """The dock's finished(stopped) comes after the bar is closed and the worker let go, yet still
    referenced (freed inside its own signal, a worker crashed Qt); Stop ends a run as stopped."""
    from napari.utils import progress

    from napari_twinvae._widgets._workers import Runner

    def job(n):
        for done in range(1, n + 1):
            time.sleep(0.01)
            yield done, n
        return n

    runner, ends = Runner(), []

    def finished(stopped):
        ends.append((stopped, runner.running, runner.pbar))

    def start(n):  # the first step makes the bar
        return runner.start(
            job, n, yielded=lambda s: runner.advance(*s), finished=finished, desc="t"
        )

    worker = start(1000)
    with qtbot.waitSignal(worker.yielded, timeout=5000):
        pass
    bar = runner.pbar
    assert runner.running and bar.total == 1000 and bar in progress._all_instances
    assert runner.stop()
    qtbot.waitUntil(lambda: len(ends) == 1, timeout=5000)
    assert ends == [(True, False, None)] and bar not in progress._all_instances
    assert runner._ended is worker and not runner.stop()
    start(3)
    qtbot.waitUntil(lambda: len(ends) == 2, timeout=5000)
    assert ends[1] == (False, False, None) and runner._ended is not worker
