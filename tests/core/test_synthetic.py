import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from napari_twinvae.core.counts import (
    MAX_COUNT,
    counts_from_centres,
    histogram_count_weights,
    labeled_count_weights,
    paper_count_weights,
    sample_counts,
)
from napari_twinvae.core.synthetic import (
    SynthConfig,
    background_image,
    estimate_background,
    generate,
    place_cells,
    synthetic_timeseries,
)


@pytest.mark.parametrize("preset", ["bf", "pc"])
def test_images_counts_and_centres_agree(preset):
    batch = generate(40, SynthConfig.preset(preset), rng=1)
    assert batch.images.shape == (40, 128, 128) and batch.images.dtype == np.float32
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert batch.counts.dtype == np.int64 and batch.centres.shape == (batch.counts.sum(), 3)
    per_frame = np.bincount(batch.centres[:, 0].astype(int), minlength=40)
    np.testing.assert_array_equal(per_frame, batch.counts)
    # a frame with cells differs from the background; an empty one is the background
    empty = generate(1, SynthConfig.preset(preset), counts=[0]).images[0]
    np.testing.assert_allclose(empty, SynthConfig.preset(preset).background_level / 255, atol=1e-6)


def test_same_seed_same_batch_other_seed_other_batch():
    a = generate(12, rng=7)
    b = generate(12, rng=np.random.default_rng(7))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.images, generate(12, rng=8).images)


@pytest.mark.parametrize("preset", ["bf", "pc"])
def test_centres_respect_the_margins_even_when_crowded(preset):
    config = SynthConfig.preset(preset)
    left, right, top, bottom = config.margins
    batch = generate(20, config, rng=2, counts=np.full(20, MAX_COUNT))
    _, y, x = batch.centres.T
    assert (x >= left).all() and (x <= 127 - right).all()
    assert (y >= top).all() and (y <= 127 - bottom).all()


def _assert_inside_margins(cells, config):
    left, right, top, bottom = config.margins
    assert (cells.cx - cells.radius >= left).all()
    assert (cells.cx + cells.radius <= 127 - right).all()
    assert (cells.cy - cells.radius >= top).all()
    assert (cells.cy + cells.radius <= 127 - bottom).all()


@pytest.mark.parametrize("preset", ["bf", "pc"])
def test_cells_overlap_no_more_than_allowed(preset):
    config = SynthConfig.preset(preset)
    rng = np.random.default_rng(3)
    cells = place_cells(np.full(30, MAX_COUNT), config, rng)
    _assert_inside_margins(cells, config)
    assert ((cells.radius >= config.radius_min) & (cells.radius < config.radius_max)).all()
    for frame in range(30):
        i = cells.frame == frame
        y, x, r = cells.cy[i], cells.cx[i], cells.radius[i]
        dist = np.hypot(y[:, None] - y[None], x[:, None] - x[None])
        allowed = r[:, None] + r[None] - config.overlap
        off_diagonal = ~np.eye(len(r), dtype=bool)
        assert (dist[off_diagonal] >= allowed[off_diagonal] - 1e-9).all()


@pytest.mark.parametrize("preset", ["bf", "pc"])
def test_touching_places_daughters_beside_earlier_cells_within_the_rules(preset):
    base = dataclasses.replace(SynthConfig.preset(preset), touching=0.0)
    counts = np.random.default_rng(0).integers(2, 16, size=60)

    def gaps(config):
        # per cell after the first: the gap between its circle and the nearest earlier one
        cells = place_cells(counts, config, np.random.default_rng(5))
        out = []
        for frame in range(counts.size):
            i = cells.frame == frame
            y, x, r = cells.cy[i], cells.cx[i], cells.radius[i]
            for j in range(1, r.size):
                out.append((np.hypot(y[:j] - y[j], x[:j] - x[j]) - r[:j] - r[j]).min())
        return cells, np.array(out)

    _, free = gaps(base)
    cells, paired = gaps(dataclasses.replace(base, touching=0.5))
    half_apart = np.isclose(paired, 0.5)
    assert not np.isclose(free, 0.5).any()
    assert 0.35 < half_apart.mean() < 0.55  # most daughters fit beside a mother
    # daughters obey the margins and the overlap rule like every other cell
    _assert_inside_margins(cells, base)
    assert (paired >= -base.overlap - 1e-9).all()
    np.testing.assert_array_equal(np.bincount(cells.frame, minlength=counts.size), counts)
    # no daughters, no extra draw: a config without them keeps its images
    plain = generate(6, SynthConfig.preset(preset), rng=3)
    np.testing.assert_array_equal(generate(6, base, rng=3).images, plain.images)
    with pytest.raises(ValueError, match="touching"):
        SynthConfig(touching=1.5)


def test_count_histogram_of_5000_images_matches_the_weights():
    # Each bin's share has a standard error below 0.0031 at n = 5,000; 0.015 is about 5 of them.
    tolerance = 0.015
    batch = generate(5000, rng=4)
    share = np.bincount(batch.counts, minlength=MAX_COUNT + 1) / 5000
    assert np.abs(share - paper_count_weights()).max() < tolerance
    assert batch.counts.min() >= 1  # the paper's weights hold no empty chamber


def test_count_distribution_helpers():
    paper = paper_count_weights()
    assert paper.shape == (MAX_COUNT + 1,) and paper[0] == 0 and paper[1] > paper[30]
    assert paper[1] / paper[30] == pytest.approx(35 / 6)
    hist = histogram_count_weights({0: 1, 5: 3})
    assert hist[0] == 0.25 and hist[5] == 0.75 and hist.sum() == pytest.approx(1)
    matched = labeled_count_weights([2, 2, 3, 7])
    assert matched[2] == 0.5 and matched[3] == 0.25 and matched[7] == 0.25
    counts = sample_counts(1000, matched, rng=0)
    assert set(np.unique(counts)) == {2, 3, 7}
    config = dataclasses.replace(SynthConfig(), count_weights=tuple(matched))
    assert set(np.unique(generate(50, config, rng=0).counts)) <= {2, 3, 7}
    with pytest.raises(ValueError, match="0..30"):
        histogram_count_weights({31: 1})
    with pytest.raises(ValueError, match="0..30"):
        labeled_count_weights([-1, 3])


def test_explicit_counts_override_the_distribution():
    wanted = np.array([0, 1, 30, 4])
    batch = generate(4, counts=wanted, rng=0)
    np.testing.assert_array_equal(batch.counts, wanted)
    with pytest.raises(ValueError, match="one entry per image"):
        generate(3, counts=wanted)
    with pytest.raises(ValueError, match="0..30"):
        generate(1, counts=[31])
    with pytest.raises(ValueError, match="negative"):
        generate(-1)


def test_config_json_round_trip_and_presets():
    for name in ("bf", "pc"):
        config = SynthConfig.preset(name)
        again = SynthConfig.from_json(config.to_json())
        assert again == config
        json.loads(config.to_json())
    assert SynthConfig.preset("bf").margins == (26, 20, 12, 6)
    assert SynthConfig.preset("pc").radius_max == 10
    with pytest.raises(ValueError, match="unknown preset"):
        SynthConfig.preset("dic")
    with pytest.raises(ValueError, match="margins"):
        SynthConfig(margins=(60, 60, 0, 0))


def test_background_is_scaled_and_resized():
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    bg = background_image(ramp)
    assert bg.shape == (128, 128) and bg.dtype == np.float32
    assert bg[:, 0].mean() < 0.02 and bg[:, -1].mean() > 0.98
    camera = np.full((128, 128), 3000, dtype=np.uint16)
    camera[:, 64:] = 5000
    assert set(np.unique(background_image(camera).round(3))) == {0.0, 1.0}
    with pytest.raises(ValueError, match="2D"):
        background_image(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        background_image(np.full((8, 8), np.nan))
    dark = generate(2, counts=[0, 0], background=np.zeros((64, 64), dtype=np.uint8))
    assert dark.images.max() == 0.0


def test_background_estimate_recovers_a_known_background():
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    known = (0.35 + 0.2 * xx - 0.1 * yy).astype(np.float32)  # a lit chamber with a gradient
    counts = np.tile([0, 1, 2, 8, 20, 25], 10)
    stack = generate(counts.size, background=known, counts=counts, rng=5).images
    by_counts = estimate_background(stack, counts)
    assert by_counts.shape == (128, 128) and by_counts.dtype == np.float32
    assert np.abs(by_counts - known).mean() < 0.005
    robust = estimate_background(stack)  # cells move, the chamber does not
    assert np.abs(robust - known).mean() < 0.005
    # counts known but no frame with few cells: the robust estimate
    np.testing.assert_allclose(
        estimate_background(stack[3:5], [8, 20]), estimate_background(stack[3:5])
    )
    with pytest.raises(ValueError, match="one entry per frame"):
        estimate_background(stack, counts[:3])


@pytest.mark.parametrize("preset", ["bf", "pc"])
def test_time_series_grows_from_one_cell(preset):
    series = synthetic_timeseries(preset, n_frames=60, seed=0)
    assert series.images.shape == (60, 128, 128) and series.images.dtype == np.float32
    assert series.counts[0] == 1 and 12 <= series.counts[-1] <= 20
    assert (np.diff(series.counts) >= 0).all()  # cells persist
    per_frame = np.bincount(series.centres[:, 0].astype(int), minlength=60)
    np.testing.assert_array_equal(per_frame, series.counts)
    again = synthetic_timeseries(preset, n_frames=60, seed=0)
    np.testing.assert_array_equal(again.images, series.images)


def test_synthetic_module_loads_no_torch():
    code = (
        "import sys, napari_twinvae.core.synthetic as s; s.generate(2); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'napari', 'qtpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_counts_from_centres_per_frame():
    points = np.array([[0, 5, 5], [0, 6, 9], [2, 1, 1]], dtype=float)
    np.testing.assert_array_equal(counts_from_centres(points), [2, 0, 1])
    np.testing.assert_array_equal(counts_from_centres(points, n_frames=5), [2, 0, 1, 0, 0])
    np.testing.assert_array_equal(counts_from_centres(points[:, 1:]), [3])
    batch = generate(7, rng=2)
    np.testing.assert_array_equal(counts_from_centres(batch.centres, 7), batch.counts)
    with pytest.raises(ValueError, match="rows"):
        counts_from_centres(np.zeros((2, 4)))
