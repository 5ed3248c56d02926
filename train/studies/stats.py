"""Medians over runs, their 95 % intervals and the verdicts drawn from them: the one rule behind ``cnnbench
compare`` and the reports, as pure functions of numbers (no MLflow here).

A side is a list of *groups*, one per run: the run's value of a run-level metric (its training images/s, an
error, a time to target). Each run counts as one value: the timing windows of one run share its clock, its
neighbours' load and its data order, so they are not independent samples of the configuration, and the variation
between runs dominates (``benchmarks/bootstrap.py``).

- Estimate of a side: the median over its runs.
- Interval of a side: Student's t interval for the mean of the runs' logarithms, taken back by exp: under
  log-normal run-to-run variation, an interval for the median run. Two runs or more.
- B / A: Welch's t interval for the difference of the mean logarithms (unequal variances), exp'd; its estimate is
  the ratio of the sides' geometric means. Logarithms make B / A and A / B mirror images and take a variation that
  scales with the level, as throughput's does.
- Verdict: B / A's interval wholly above or below 1 (or a published figure outside a side's interval), drawn only
  with ``RUNS_NEEDED`` runs per side or more, and never from a zero-width interval (every run of each side gave
  the same value: nothing measures the noise).

A bootstrap over runs was used before: with 1-5 runs a side its interval is at most the range of the runs, and
its A/A comparisons called 25-58 % of them different; Welch's interval holds its 95 % from two runs on.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
# Fewest runs per side for a verdict: the smallest n from which on the A/A false alarms stay <= 5 % and
# the true ratio is covered >= 90 % at 3 % and 10 % run-to-run spread (`python benchmarks/bootstrap.py` measures
# and checks them; docs/suites-and-reports.md has its table).
RUNS_NEEDED = 2
METHOD = ("Each run counts as one value; a side's figure is the median over its runs, its "
          "95 % interval Student's t on the runs' logarithms (2 runs or more); B / A the ratio of geometric means "
          "with Welch's 95 % t interval on the logarithms.")


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95 % interval; the bounds are NaN where there is none (one run)."""

    estimate: float
    low: float
    high: float

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def zero_width(self) -> bool:
        return self.defined and self.low == self.high

    def excludes(self, value: float) -> bool:
        """True when the interval exists and ``value`` lies outside it."""
        return self.defined and not self.low <= value <= self.high


def run_values(groups: Sequence[Sequence[float]]) -> np.ndarray:
    """Each run's one value: the median of its samples."""
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("every side needs at least one run, and every run at least one value")
    return np.array([np.median(np.asarray(g, dtype=float)) for g in groups])


def median_interval(groups: Sequence[Sequence[float]]) -> Interval:
    """The median over runs and the t interval of the median run (NaN bounds for one run)."""
    values = run_values(groups)
    return Interval(float(np.median(values)), *map(float, t_bounds(values)))


def ratio_interval(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> tuple[Interval, Interval, Interval]:
    """A's and B's medians with their intervals, and B / A (geometric means) with Welch's interval."""
    return median_interval(a), median_interval(b), Interval(*map(float, welch_ratio(run_values(a), run_values(b))))


def t_bounds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of Student's t interval on the logarithms of ``values`` (runs along the last axis), exp'd:
    NaN for one run or a value <= 0 (no logarithm). Vectorised over the leading axes, for the benchmark."""
    logs = _logs(values)
    if logs.shape[-1] < 2:
        return np.full(logs.shape[:-1], np.nan), np.full(logs.shape[:-1], np.nan)
    found = _quietly(lambda: scipy_stats.ttest_1samp(logs, 0.0, axis=-1).confidence_interval(CONFIDENCE))
    same = np.ptp(logs, axis=-1) == 0  # no spread: scipy answers NaN; the interval is the value
    return tuple(np.exp(np.where(same, logs[..., 0], bound)) for bound in (found.low, found.high))


def welch_ratio(values_a: np.ndarray, values_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) of B / A: the ratio of the geometric means of the runs (last axis) with Welch's t
    interval on the logarithms, exp'd; bounds NaN where a side has one run, all NaN where a value is <= 0.
    Vectorised over the leading axes, for the benchmark."""
    logs_a, logs_b = _logs(values_a), _logs(values_b)
    estimate = np.exp(logs_b.mean(axis=-1) - logs_a.mean(axis=-1))
    if min(logs_a.shape[-1], logs_b.shape[-1]) < 2:  # one run has no variance to weigh
        return estimate, np.full_like(estimate, np.nan), np.full_like(estimate, np.nan)
    found = _quietly(lambda: scipy_stats.ttest_ind(logs_b, logs_a, axis=-1, equal_var=False)
                     .confidence_interval(CONFIDENCE))
    same = (np.ptp(logs_a, axis=-1) == 0) & (np.ptp(logs_b, axis=-1) == 0)  # ties: a zero-width interval
    return estimate, *(np.where(same, estimate, np.exp(bound)) for bound in (found.low, found.high))


def accuracy_interval(accuracy_pct: float, images: int) -> Interval:
    """An accuracy (%) measured over ``images`` images, with the exact (Clopper-Pearson) 95 % interval of the
    proportion: how far another sample of that many images could put it. The verdict of an evaluation of fixed
    weights, which gives the same figure on every repeat: its noise is the sample of images, not the run."""
    correct = round(accuracy_pct / 100 * images)
    found = scipy_stats.binomtest(correct, images).proportion_ci(CONFIDENCE, method="exact")
    return Interval(accuracy_pct, 100 * found.low, 100 * found.high)


def side_of(interval: Interval, value: float) -> int:
    """+1 when the whole interval lies above ``value``, -1 when below, 0 when it holds it or does not exist."""
    if not interval.excludes(value):
        return 0
    return 1 if interval.low > value else -1


def direction(ratio: Interval) -> int:
    """+1 when B / A's interval lies above 1, -1 when below, 0 when it holds 1 or does not exist."""
    return side_of(ratio, 1.0)


def withheld(runs: Sequence[int], interval: Interval) -> str:
    """Why no verdict may be drawn from ``interval``, whose sides had ``runs`` runs each; "" when one may."""
    if not enough_runs(runs):
        return too_few(runs, RUNS_NEEDED)
    if not (math.isfinite(interval.estimate) and interval.defined):
        return "no verdict: a value of 0 has no logarithm"
    if interval.zero_width:
        return "no verdict: every run of each side gave the same value (a zero-width interval)"
    return ""


def enough_runs(runs: Sequence[int]) -> bool:
    return min(runs) >= RUNS_NEEDED


def too_few(runs: Sequence[int], needed: int) -> str:
    counts = " and ".join(map(str, dict.fromkeys(runs)))
    return f"too few runs for a verdict: {counts} per side, {needed} needed"


def _logs(values) -> np.ndarray:
    """Natural logarithms; NaN for a value <= 0 (an error of 0 %), which then has no interval and no ratio."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log(values), np.nan)


def _quietly(compute):
    """scipy's answer without its warnings for nearly equal values and NaN inputs: both are handled here."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return compute()
