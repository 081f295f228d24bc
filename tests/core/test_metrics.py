import math

import pytest

from napari_twinvae.core.metrics import (
    accuracy,
    count_flags,
    count_metrics,
    mae,
    mre,
    round_counts,
)


def test_rounding_halves_up_and_never_negative():
    assert round_counts([0.49, 0.5, 1.5, 2.5, -0.7, 29.6]).tolist() == [0, 1, 2, 3, 0, 30]


def test_metrics_by_hand():
    estimates = [2.2, 3.6, 10.0, 0.4]  # rounds to 2, 4, 10, 0
    labels = [2, 3, 12, 0]
    assert accuracy(estimates, labels) == pytest.approx(0.5)
    assert mae(estimates, labels) == pytest.approx((0 + 1 + 2 + 0) / 4)
    # relative error over labels > 0 only: 0/2, 1/3, 2/12
    assert mre(estimates, labels) == pytest.approx((0 + 1 / 3 + 2 / 12) / 3 * 100)
    assert count_metrics(estimates, labels)["n"] == 4


def test_metrics_edge_cases():
    assert math.isnan(mre([0.2], [0]))
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="labels"):
        mae([1.0, 2.0], [1])


def test_counts_outside_the_trained_range_are_flagged():
    estimates = [[0.4, 30.49, 30.5, 48.7], [-0.6, float("nan"), float("inf"), 1e30]]
    assert count_flags(estimates).tolist() == [
        ["", "", "above 30", "above 30"],
        ["below 0", "no estimate", "no estimate", "above 30"],
    ]
    assert round_counts(estimates)[1].tolist() == [0, 0, 0, 2**31]  # no invalid cast
