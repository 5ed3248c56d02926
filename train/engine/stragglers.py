"""Which rank of a job is slow: the rule, and the sentence the run is tagged with.

In data-parallel training every rank waits for the slowest at each all-reduce, so their wall step times are the
same; what differs is each rank's own step time (``busy_ms``: data wait, forward, backward and optimizer of its
sampled steps, the all-reduce wait left out, train/engine/breakdown.py). The rule:

  a rank is a straggler when busy_ms(rank) > busy_ms(median rank) * (1 + max(NOISE_K * noise, FLOOR))

where the median rank is the lower median of the ranks' busy_ms (a rank's own figure: with two ranks, the faster
one), and noise is the spread of the epoch's timing windows, as their interquartile range over their median
(the job's window images/s, ``train_images_per_sec_window``; the quartiles rather than max - min, so that one
window a neighbour's burst slowed does not hide every straggler). A rank is named only when it is slower than the
median rank by more than the middle half of the job's own windows spans, and by at least ``FLOOR``: on a machine
whose other work spreads the windows by 40 %, a rank 30 % slower than the median one is noise.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

NOISE_K = 1.0
FLOOR = 0.10
TAG = "cnnbench.straggler"


@dataclass(frozen=True)
class Straggler:
    rank: int
    excess: float  # busy_ms over the median rank's, - 1
    bound: float  # the excess a rank must pass to be named: max(NOISE_K * spread, FLOOR)


def noise_bound(window_rates: Sequence[float]) -> float:
    """The fraction a rank must exceed the median rank by; the floor alone with fewer than two windows."""
    if len(window_rates) < 2:
        return FLOOR
    low, median, high = statistics.quantiles(window_rates, n=4, method="inclusive")
    return max(NOISE_K * (high - low) / median, FLOOR)


def find_stragglers(busy_ms: Sequence[float], window_rates: Sequence[float]) -> list[Straggler]:
    """The ranks the rule names, slowest first; none when fewer than two ranks have a figure."""
    known = [ms for ms in busy_ms if math.isfinite(ms)]
    if len(known) < 2:
        return []
    median = statistics.median_low(known)
    bound = noise_bound(window_rates)
    found = [Straggler(rank, ms / median - 1, bound) for rank, ms in enumerate(busy_ms)
             if math.isfinite(ms) and ms > median * (1 + bound)]
    return sorted(found, key=lambda s: -s.excess)


def describe(stragglers: Sequence[Straggler], hosts: Sequence[str], epoch: int) -> str:
    """The tag's sentence: each named rank with its host and excess, and the bound it passed."""
    named = "; ".join(f"rank {s.rank} on {hosts[s.rank]}: own step time {100 * s.excess:.0f} % above the median "
                      f"rank's" for s in stragglers)
    return (f"epoch {epoch}: {named} (noise bound {100 * stragglers[0].bound:.0f} %: max({NOISE_K:g} x the "
            f"interquartile range / median of the timing windows' images/s, {100 * FLOOR:.0f} %))")
