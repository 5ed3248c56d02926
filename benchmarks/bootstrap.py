"""How often ``cnnbench compare`` is right: its verdicts on simulated runs whose truth is known.

Each simulated run has 40 timing windows: its level times a run factor (log-normal, ``--run-spread``, the
run-to-run variation of a real machine) times 5 % noise per window. For 1, 2, 3 and 5 runs per side it
compares, ``--trials`` times each, two sides drawn from the same configuration (A/A: a verdict other than "no
significant difference" is a false alarm) and two whose levels differ by ``--ratio`` (how often the 95 %
interval holds the true ratio, and how often the difference is found), with ``train.studies.stats`` as compare
uses it. Prints figures; asserts nothing.

  python benchmarks/bootstrap.py                      # 3 % run-to-run variation, B 20 % faster, 200 trials
  python benchmarks/bootstrap.py --run-spread 0       # runs that vary only by their windows' noise
"""
from __future__ import annotations

import argparse

import numpy as np

from train.studies import stats

WINDOWS, WINDOW_NOISE = 40, 0.05


def simulated_runs(rng: np.random.Generator, runs: int, level: float, run_spread: float) -> list[np.ndarray]:
    return [level * rng.lognormal(0, run_spread) * rng.normal(1, WINDOW_NOISE, WINDOWS) for _ in range(runs)]


def rates(runs: int, args, rng: np.random.Generator) -> tuple[float, float, float]:
    """(A/A false alarms, coverage of the true ratio, difference found), as fractions of the trials."""
    alarms = covered = found = 0
    for _ in range(args.trials):
        a, same, b = (simulated_runs(rng, runs, level, args.run_spread) for level in (100, 100, 100 * args.ratio))
        alarms += stats.direction(stats.ratio_interval(a, same, args.resamples)[2]) != 0
        ratio = stats.ratio_interval(a, b, args.resamples)[2]
        covered += not ratio.excludes(args.ratio)
        found += stats.direction(ratio) != 0
    return alarms / args.trials, covered / args.trials, found / args.trials


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--run-spread", type=float, default=0.03, help="sd of log run factor (default 0.03: ~3 %%)")
    p.add_argument("--ratio", type=float, default=1.2, help="true B / A of the unequal pairs (default 1.2)")
    p.add_argument("--trials", type=int, default=200, help="simulated comparisons per row (default 200)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (compare: 10,000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{WINDOWS} windows per run, {WINDOW_NOISE:.0%} window noise, run-to-run sd {args.run_spread:.0%}, "
          f"B / A = {args.ratio}, {args.trials} trials, {args.resamples} resamples")
    print("runs per side | A/A false alarms | true ratio covered | difference found")
    for runs in (1, 2, 3, 5):
        alarms, covered, found = rates(runs, args, rng)
        print(f"{runs:13d} | {alarms:16.1%} | {covered:18.1%} | {found:16.1%}", flush=True)


if __name__ == "__main__":
    main()
