"""The bootstrap behind ``cnnbench compare`` and the reports' intervals, as pure functions of numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from train.studies import stats
from train.studies.stats import Interval, direction, median_interval, median_of_medians, ratio_interval


def test_the_estimate_is_the_median_over_groups_of_each_groups_median():
    assert median_of_medians([[1, 2, 3], [10], [4, 5]]) == 4.5


def test_one_value_has_nothing_to_resample():
    assert median_interval([[7.5]]) == Interval(7.5, 7.5, 7.5)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_up_to_five_single_values_give_their_range_as_the_documented_note_says(n):
    values = [[float(v)] for v in range(1, n + 1)]
    assert (median_interval(values).low, median_interval(values).high) == (1, n)


def test_six_single_values_give_an_interval_inside_their_range():
    interval = median_interval([[float(v)] for v in range(1, 7)])
    assert 1 < interval.low and interval.high < 6


def test_the_interval_depends_on_the_numbers_only_not_on_their_order_or_the_chunking(monkeypatch):
    rng = np.random.default_rng(0)
    groups = [list(rng.normal(100, 5, 30)) for _ in range(3)]
    first = median_interval(groups)
    shuffled = [list(rng.permutation(g)) for g in reversed(groups)]
    assert median_interval(shuffled) == first
    monkeypatch.setattr(stats, "_CHUNK", 7 * 30)  # a long run is resampled in chunks: the same draws
    assert median_interval(groups) == first


def test_direction_says_whether_the_ratio_interval_excludes_one():
    assert direction(Interval(1.2, 1.1, 1.3)) == 1
    assert direction(Interval(0.8, 0.7, 0.9)) == -1
    assert direction(Interval(1.0, 0.9, 1.1)) == 0
    assert direction(Interval(math.nan, math.nan, math.nan)) == 0


def test_an_empty_side_or_group_is_refused():
    for groups in ([], [[1.0], []]):
        with pytest.raises(ValueError):
            median_interval(groups)


SIMULATIONS = 200
RESAMPLES = 1000  # enough for the 2.5th and 97.5th percentiles here, and 10 x faster than the default


def windows(rng: np.random.Generator, level: float, run_spread: float = 0.0) -> np.ndarray:
    """A run's 40 timing windows: the level times a run factor (run-to-run variation), 5 % noise per window."""
    return level * rng.lognormal(0, run_spread) * rng.normal(1, 0.05, 40)


def test_one_run_per_side_windows_only_covers_a_planted_ratio_and_rarely_sees_a_difference_that_is_not_there():
    rng = np.random.default_rng(2024)
    covered = false_alarms = 0
    for _ in range(SIMULATIONS):
        a, b, same = [windows(rng, 100)], [windows(rng, 120)], [windows(rng, 100)]
        covered += not ratio_interval(a, b, RESAMPLES)[2].excludes(1.2)
        false_alarms += direction(ratio_interval(a, same, RESAMPLES)[2]) != 0
    assert covered / SIMULATIONS >= 0.9  # nominal 95 %; binomial sd over 200 trials is 1.5 %
    assert false_alarms / SIMULATIONS <= 0.1  # nominal 5 %


def test_five_runs_per_side_hierarchical_covers_a_planted_ratio_despite_run_to_run_variation():
    rng = np.random.default_rng(2025)
    covered = 0
    for _ in range(SIMULATIONS):
        a = [windows(rng, 100, run_spread=0.03) for _ in range(5)]
        b = [windows(rng, 120, run_spread=0.03) for _ in range(5)]
        covered += not ratio_interval(a, b, RESAMPLES)[2].excludes(1.2)
    assert covered / SIMULATIONS >= 0.9
