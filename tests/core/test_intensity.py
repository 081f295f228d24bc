import numpy as np
import pytest

from napari_twinvae.core.intensity import Normalization, normalize_frames


def test_percentile_normalisation_is_per_frame_and_dtype_free():
    rng = np.random.default_rng(0)
    frames = rng.integers(1000, 5000, size=(3, 16, 16)).astype(np.uint16)
    frames[1] *= 10
    out = normalize_frames(frames)
    assert out.dtype == np.float32 and out.shape == frames.shape
    assert out.min() == 0.0 and out.max() == 1.0
    # The same picture at another bit depth or gain normalises the same.
    np.testing.assert_allclose(
        normalize_frames(frames[0].astype(np.float64) / 4), out[0], atol=1e-5
    )


def test_fixed_range_and_flat_frames():
    norm = Normalization(mode="fixed", low=0, high=255)
    out = normalize_frames(np.array([[0, 51, 255, 300]], dtype=np.int32), norm)
    np.testing.assert_allclose(out, [[0, 0.2, 1, 1]])
    assert not np.isnan(normalize_frames(np.full((4, 4), 7.0))).any()


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        normalize_frames(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError):
        Normalization(low=5, high=1)
    assert Normalization.from_json(Normalization(mode="fixed", low=1, high=9).to_json()).high == 9
