"""How often ``cnnbench compare`` is right, and from how many runs per side it may give a verdict at all.

Its statistics (``train.studies.stats``, as compare calls them) on simulated runs whose truth is known, for 1-6
runs per side, at 3 % and 10 % run-to-run spread. A run is one value (its images/s, an error, a time to target,
as compare reads them): its level × a run factor (log-normal, sd = the spread) × its steady state over 40 timing
windows whose noise is autocorrelated (AR(1), φ 0.8, 5 %), the run's images ÷ seconds.
Per row, --trials comparisons of two sides of one configuration (A/A: a difference called is a false alarm) and
of two whose levels differ by --ratio (is that ratio inside the 95 % interval; is the difference found). The
bounds: false alarms <= 5 %, coverage >= 90 %, at both spreads. A verdict is given from stats.RUNS_NEEDED runs
per side on; the script prints the fewest n from which every row meets the bounds, and exits 1 where that is more
than RUNS_NEEDED (a verdict given where the method does not hold).

  python benchmarks/bootstrap.py                 # 20,000 trials a row (binomial sd of 5 %: 0.15 %)

(The file keeps its name from the bootstrap that compare used before; that bootstrap's false alarms were 57.5 %
at 1 run per side, 25 % at 2 and 5.5 % at 3, resampling timing windows, 3 % spread.)
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from train.studies import stats

SPREADS = (0.03, 0.10)
WINDOWS, PHI, WINDOW_SPREAD = 40, 0.8, 0.05  # a run's timing windows: neighbours' load and page cache persist
RUNS = range(1, 7)
MAX_FALSE_ALARMS, MIN_COVERAGE = 0.05, 0.90


def run_values(rng: np.random.Generator, shape: tuple[int, int], level: float, spread: float) -> np.ndarray:
    """``shape`` = (trials, runs) simulated runs' images/s: its level x a run factor (log-normal, sd = the spread) x
    its steady state over WINDOWS timing windows of equal images whose log noise is autocorrelated (AR(1), PHI,
    sd WINDOW_SPREAD): the run's images / seconds, the harmonic mean of its windows' rates."""
    noise = np.empty((*shape, WINDOWS))
    noise[..., 0] = rng.normal(0, WINDOW_SPREAD, shape)
    innovations = rng.normal(0, WINDOW_SPREAD * np.sqrt(1 - PHI ** 2), (*shape, WINDOWS))
    for k in range(1, WINDOWS):
        noise[..., k] = PHI * noise[..., k - 1] + innovations[..., k]
    steady = WINDOWS / np.exp(-noise).sum(axis=-1)
    return level * rng.lognormal(0, spread, shape) * steady


def rates(rng: np.random.Generator, runs: int, spread: float, args) -> tuple[float, float, float]:
    """(A/A false alarms, coverage of the true ratio, difference found), as fractions of the trials: the method's
    own answers (stats.welch_ratio, as compare's stats.ratio_interval calls it), whether or not compare shows a
    verdict at this n."""
    a, same, b = (run_values(rng, (args.trials, runs), level, spread) for level in (100, 100, 100 * args.ratio))
    _, low, high = stats.welch_ratio(a, same)
    alarms = (low > 1) | (high < 1)  # NaN bounds (one run) compare False: no interval, no alarm
    _, low, high = stats.welch_ratio(a, b)
    covered = (low <= args.ratio) & (args.ratio <= high)
    found = (low > 1) | (high < 1)
    return alarms.mean(), covered.mean(), found.mean()


def main() -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--ratio", type=float, default=1.2, help="true B / A of the unequal pairs (default 1.2)")
    p.add_argument("--trials", type=int, default=20_000, help="simulated comparisons per row (default 20,000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"B / A = {args.ratio}, {args.trials} trials a row; bounds: false alarms <= {MAX_FALSE_ALARMS:.0%}, "
          f"coverage >= {MIN_COVERAGE:.0%}")
    print("\nruns per side | run spread | A/A false alarms | true ratio covered | difference found | compare's verdict")
    holds = {}
    for runs in RUNS:
        holds[runs] = True
        for spread in SPREADS:
            alarms, covered, found = rates(rng, runs, spread, args)
            holds[runs] &= alarms <= MAX_FALSE_ALARMS and covered >= MIN_COVERAGE
            shown = "given" if runs >= stats.RUNS_NEEDED else "too few runs"
            covered_text = f"{covered:.1%}" if runs > 1 else "— (one run: no interval)"
            print(f"{runs:d} | {spread:.0%} | {alarms:.1%} | {covered_text} | {found:.1%} | {shown}", flush=True)
    fewest = min((n for n in RUNS if all(holds[m] for m in RUNS if m >= n)), default=None)
    print(f"the bounds hold from {fewest} runs per side on; compare gives verdicts from {stats.RUNS_NEEDED} "
          f"(stats.RUNS_NEEDED)")
    if fewest is None or fewest > stats.RUNS_NEEDED:
        print("\nMISMATCH: compare gives verdicts where the bounds do not hold: raise stats.RUNS_NEEDED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
