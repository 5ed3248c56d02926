"""Medians with 95 % bootstrap confidence intervals, and ratios of two of them: the statistics of
``cnnbench compare`` and of the reports, as pure functions of numbers (no MLflow here).

The data of one side is a list of *groups*, one per run: a run's timing-window images/s, or its one value
of a run-level metric (a final error, a time to target).

- Estimate: the median over runs of each run's median (one run: the median of its values).
- Resampling (percentile bootstrap, ``N_RESAMPLES`` resamples):
  one run: its values, drawn with replacement;
  several runs: the runs, drawn with replacement (as many as there are), then each drawn run's values, drawn
  with replacement afresh every time the run is drawn: a two-level (hierarchical) bootstrap, which carries
  both run-to-run and within-run variation (Saravanan et al. 2020, "Application of the hierarchical bootstrap
  to multi-level data in neuroscience"). With one value per run it is the plain bootstrap over runs.
- Interval: the 2.5th and 97.5th percentiles of the resampled estimates. A ratio B/A takes A's and B's
  resamples, drawn independently, resample by resample.
- Seed: a fixed ``SEED`` for every call, and the groups put in a canonical order first, so the same numbers give
  the same interval whatever ran before and in whichever order they come.

scipy.stats.bootstrap resamples the observations of each sample at one level only; it cannot draw runs and
then windows within them, hence the resampling here (numpy, vectorised over resamples).

Mind small samples: ``FEW_VALUES``; and one or two runs per side hold little or none of the run-to-run
variation. ``benchmarks/bootstrap.py`` measures how often the verdicts are right on simulated runs (README,
"Comparing runs").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

N_RESAMPLES = 10_000
SEED = 0
CONFIDENCE = 0.95
FEW_VALUES = ("With one value per run, 5 runs or fewer give an interval that is their range, which holds the true "
              "median less often than 95 %: 50 % of the time for 2 runs, 75 % for 3, 88 % for 4, 94 % for 5.")
_CHUNK = 1 << 22  # values gathered at once when resampling a long run: bounds memory to ~32 MB per array


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95 % percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high


def median_of_medians(groups: Sequence[Sequence[float]]) -> float:
    """The estimate: the median over groups of each group's median."""
    return float(np.median([np.median(g) for g in _arrays(groups)]))


def median_interval(groups: Sequence[Sequence[float]], n_resamples: int = N_RESAMPLES) -> Interval:
    """``median_of_medians(groups)`` and its interval."""
    resampled = bootstrap_medians(_arrays(groups), np.random.default_rng(SEED), n_resamples)
    return _interval(median_of_medians(groups), resampled)


def ratio_interval(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]],
                   n_resamples: int = N_RESAMPLES) -> tuple[Interval, Interval, Interval]:
    """A's and B's medians with their intervals, and the ratio B / A with its interval."""
    rng = np.random.default_rng(SEED)
    resampled_a = bootstrap_medians(_arrays(a), rng, n_resamples)
    resampled_b = bootstrap_medians(_arrays(b), rng, n_resamples)  # drawn after A's: independent of them
    median_a, median_b = median_of_medians(a), median_of_medians(b)
    with np.errstate(divide="ignore", invalid="ignore"):  # a median of 0 makes the ratio inf or nan: shown so
        ratio = _interval(median_b / median_a if median_a else np.nan, resampled_b / resampled_a)
    return _interval(median_a, resampled_a), _interval(median_b, resampled_b), ratio


def direction(ratio: Interval) -> int:
    """+1 when the whole interval of B / A lies above 1, -1 when below, 0 when it holds 1 (no significant
    difference at 95 %) or is undefined."""
    if ratio.low > 1:
        return 1
    if ratio.high < 1:
        return -1
    return 0


def bootstrap_medians(groups: list[np.ndarray], rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """``n_resamples`` resampled values of ``median_of_medians(groups)``, resampled as the module says."""
    count = len(groups)
    drawn = rng.integers(0, count, size=(n_resamples, count)) if count > 1 else np.zeros((n_resamples, 1), int)
    medians = np.empty(drawn.shape)
    for index, values in enumerate(groups):
        slots = drawn == index
        medians[slots] = _resampled_medians(values, rng, int(slots.sum()))
    return np.median(medians, axis=1)


def _resampled_medians(values: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Medians of ``count`` resamples of ``values`` with replacement (a single value is its own resample)."""
    if len(values) == 1:
        return np.full(count, values[0])
    per_chunk = max(1, _CHUNK // len(values))
    chunks = []
    for start in range(0, count, per_chunk):
        picks = rng.integers(0, len(values), size=(min(per_chunk, count - start), len(values)))
        chunks.append(np.median(values[picks], axis=1))
    return np.concatenate(chunks) if chunks else np.empty(0)


def _interval(estimate: float, resampled: np.ndarray) -> Interval:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def _arrays(groups: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """The groups as sorted arrays in a canonical order: the resamples draw by position, and this makes the
    interval depend on the numbers only, not on the order in which the store returned the runs."""
    arrays = [np.sort(np.asarray(g, dtype=float)) for g in groups]
    if not arrays or any(a.ndim != 1 or a.size == 0 for a in arrays):
        raise ValueError("every side needs at least one group, and every group at least one value")
    return sorted(arrays, key=lambda a: (a.size, tuple(a)))
