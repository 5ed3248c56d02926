"""The statistics behind ``cnnbench compare`` and the reports' intervals, as pure functions of numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from train.studies import stats
from train.studies.stats import Interval, direction, median_interval, ratio_interval, withheld


def test_a_run_is_its_median_and_a_side_the_median_over_runs():
    assert median_interval([[1, 2, 3], [10], [4, 5]]).estimate == 4.5


def test_one_run_has_no_interval():
    interval = median_interval([[7.5]])
    assert interval.estimate == 7.5 and not interval.defined and not interval.excludes(100)


def test_a_sides_interval_is_students_t_on_the_runs_logarithms():
    values = [8.0, 8.5, 12.0]
    logs = np.log(values)
    half = scipy_stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    interval = median_interval([[v] for v in values])
    assert interval.estimate == 8.5
    assert interval.low == pytest.approx(math.exp(logs.mean() - half))
    assert interval.high == pytest.approx(math.exp(logs.mean() + half))


def test_b_over_a_is_the_ratio_of_geometric_means_with_welchs_interval():
    a, b = [100.0, 103.0, 98.0], [120.0, 118.0, 125.0, 119.0]
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / 3, lb.var(ddof=1) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    _, _, ratio = ratio_interval([[v] for v in a], [[v] for v in b])
    assert ratio.estimate == pytest.approx(math.exp(lb.mean() - la.mean()))
    assert (ratio.low, ratio.high) == pytest.approx((math.exp(lb.mean() - la.mean() - half),
                                                     math.exp(lb.mean() - la.mean() + half)))


def test_a_run_of_windows_counts_once_however_many_windows_it_has():
    one_value = ratio_interval([[100.0], [102.0]], [[120.0], [119.0]])[2]
    windowed = ratio_interval([[99.0, 100.0, 101.0] * 10, [102.0]], [[120.0], [118.0, 119.0, 120.0]])[2]
    assert windowed == one_value


def test_a_against_a_with_one_run_per_side_gives_too_few_runs():
    """Issue 21: one run per side printed "B faster" with an interval [1.105-1.296]; one run has no variance."""
    rng = np.random.default_rng(0)
    a, b = [list(rng.normal(100, 5, 40))], [list(rng.normal(117, 5, 40))]
    _, _, ratio = ratio_interval(a, b)
    assert not ratio.defined and direction(ratio) == 0
    assert withheld((1, 1), ratio) == "too few runs for a verdict: 1 per side, 2 needed"
    assert withheld((1, 3), ratio) == "too few runs for a verdict: 1 and 3 per side, 2 needed"


def test_planted_clearly_different_sets_with_enough_runs_give_a_verdict():
    a, b = [[100.0], [102.0], [98.0]], [[130.0], [127.0], [133.0]]
    _, _, ratio = ratio_interval(a, b)
    assert ratio.low > 1.2 and ratio.high < 1.4
    assert direction(ratio) == 1 and withheld((3, 3), ratio) == ""
    assert direction(ratio_interval(b, a)[2]) == -1


@pytest.mark.parametrize("b", [[[8.0], [8.0], [8.0]], [[9.0], [9.0], [9.0]]])
def test_ties_give_a_zero_width_interval_and_no_verdict(b):
    """Runs that all gave the same value measure no noise: 8 % vs 9 % on every seed is no verdict either."""
    _, _, ratio = ratio_interval([[8.0], [8.0], [8.0]], b)
    assert ratio.zero_width and ratio.low == pytest.approx(b[0][0] / 8.0)
    assert withheld((3, 3), ratio) == ("no verdict: every run of each side gave the same value "
                                                        "(a zero-width interval)")


def test_a_value_of_zero_has_no_logarithm_and_no_verdict():
    _, b, ratio = ratio_interval([[0.0], [1.0]], [[2.0], [3.0]])
    assert b.defined and not ratio.defined and math.isnan(ratio.estimate)
    assert withheld((2, 2), ratio) == "no verdict: a value of 0 has no logarithm"


def test_direction_says_whether_the_ratio_interval_excludes_one():
    assert direction(Interval(1.2, 1.1, 1.3)) == 1
    assert direction(Interval(0.8, 0.7, 0.9)) == -1
    assert direction(Interval(1.0, 0.9, 1.1)) == 0
    assert direction(Interval(math.nan, math.nan, math.nan)) == 0


def test_an_empty_side_or_run_is_refused():
    for groups in ([], [[1.0], []]):
        with pytest.raises(ValueError):
            median_interval(groups)


def test_the_vectorised_form_is_the_one_compare_uses():
    """benchmarks/bootstrap.py measures welch_ratio over arrays of trials: the same answers, trial by trial."""
    rng = np.random.default_rng(4)
    a, b = rng.lognormal(4, 0.1, (5, 3)), rng.lognormal(4.1, 0.1, (5, 3))
    estimate, low, high = stats.welch_ratio(a, b)
    for i in range(5):
        ratio = ratio_interval([[v] for v in a[i]], [[v] for v in b[i]])[2]
        assert (ratio.estimate, ratio.low, ratio.high) == pytest.approx((estimate[i], low[i], high[i]))


def test_two_runs_per_side_a_against_a_rarely_differs_and_a_planted_ratio_is_covered():
    """The bound compare's RUNS_NEEDED rests on, at its smallest n, for a fast check (the benchmark measures 1-6)."""
    rng = np.random.default_rng(2025)
    trials = 4000
    a, same = rng.lognormal(0, 0.1, (2, trials, 2))
    b = 1.2 * rng.lognormal(0, 0.1, (trials, 2))
    _, low, high = stats.welch_ratio(a, same)
    assert np.mean((low > 1) | (high < 1)) <= 0.05  # Welch at n = 2: about 2.3 %
    _, low, high = stats.welch_ratio(a, b)
    assert np.mean((low <= 1.2) & (1.2 <= high)) >= 0.9
