"""What every report needs: which runs to flag, Markdown tables, and cells of measured figures."""
from __future__ import annotations

import functools
import math
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from train.engine.schema import METRIC_BY_NAME, TRUSTED_SPREAD_PCT, is_trusted_spread
from train.studies import stats
from train.studies.figures import significant

TIMED_UNITS = ("images/s", "s", "ms")  # figures read off the clock, which noisy timing windows make suspect
REPEAT_PARAM = "seed"  # what repeats of one setting vary
# params that change no figure of a report: where checkpoints go, and the peak TFLOP/s behind mfu_pct alone (the
# first run on a machine measures it, later ones read it from a cache: another value and source for one setting)
NO_EFFECT = frozenset({"checkpoint_dir", "peak_tflops", "peak_tflops_source"})


def run_flags(run, metric: str | None = None) -> list[str]:
    """Why ``metric`` from ``run`` must be marked in a report (empty when it can be trusted); without ``metric``,
    every reason the run has. A run that did not finish concerns every figure; noisy timing windows only the
    figures read off the clock."""
    flags = []
    if run.info.status != "FINISHED":
        flags.append(f"run {run.info.status.lower()}")
    spread = run.data.metrics.get("epoch_images_per_sec_spread")  # the last epoch's
    timed = metric is None or METRIC_BY_NAME[metric].unit in TIMED_UNITS
    if timed and spread is not None and not is_trusted_spread(spread):
        flags.append(f"windows spread {spread:.0f} % (over {TRUSTED_SPREAD_PCT:g} %)" if math.isfinite(spread)
                     else "one timing window: no spread to tell a steady figure")
    return flags


def settings_of(run) -> dict[str, str]:
    """Every param of ``run`` that can change a figure: all but the seed and ``NO_EFFECT``. Runs with the same
    settings are repeats of one cell."""
    return {k: v for k, v in sorted(run.data.params.items()) if k != REPEAT_PARAM and k not in NO_EFFECT}


def varying(settings: list[dict[str, str]]) -> list[str]:
    """The params whose values differ among ``settings`` (a param one of them lacks counts as "?"), sorted."""
    return [k for k in sorted({k for one in settings for k in one}) if len({one.get(k, "?") for one in settings}) > 1]


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


FLAG_MARK = "⚠"


@dataclass(frozen=True)
class Measured:
    """One table cell: the median of a metric over the runs of one configuration (repeats, seeds)."""

    values: tuple[float, ...]
    flagged: bool  # no trusted run was there: the figure comes from flagged runs

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @functools.cached_property
    def interval(self) -> stats.Interval | None:
        """The 95 % interval of the median run (``train.studies.stats``); None for one run or a value <= 0."""
        interval = stats.median_interval([[v] for v in self.values])
        return interval if interval.defined else None

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of the interval; the median twice for one run (for error bars)."""
        return (self.interval.low, self.interval.high) if self.interval else (self.median, self.median)

    def cell(self, show: Callable[[float], str] = significant) -> str:
        """``median`` as ``show`` prints it; with repeats also ``[95 % CI low–high, n=N]``; marked when flagged."""
        text = show(self.median)
        if self.interval:
            text += f" [{show(self.interval.low)}–{show(self.interval.high)}, n={len(self.values)}]"
        return f"{text} {FLAG_MARK}" if self.flagged else text


NOT_SIGNIFICANT = "n.s."


def ratio_cell(cell: Measured, baseline: Measured) -> str:
    """cell / baseline as ``1.52×``; with the runs a verdict needs on both sides also its 95 % interval, and
    ``n.s.`` where that interval holds 1 or gives no verdict (``compare``'s rule, ``train.studies.stats``); marked
    when either is flagged."""
    flag = f" {FLAG_MARK}" if cell.flagged or baseline.flagged else ""
    runs = (len(baseline.values), len(cell.values))
    _, _, ratio = stats.ratio_interval([[v] for v in baseline.values], [[v] for v in cell.values])
    if min(runs) < stats.RUNS_NEEDED or not ratio.defined:
        return f"{cell.median / baseline.median:.2f}×{flag}"
    text = f"{ratio.estimate:.2f}× [{ratio.low:.2f}–{ratio.high:.2f}]"
    significant_difference = stats.direction(ratio) and not stats.withheld(runs, ratio)
    return (text if significant_difference else f"{text} {NOT_SIGNIFICANT}") + flag


def measured(runs, metric: str) -> Measured | None:
    """``metric`` over ``runs``: from the trusted runs, or, where all are flagged, from those, marked."""
    with_value = [r for r in runs if math.isfinite(r.data.metrics.get(metric, math.nan))]
    if not with_value:
        return None
    trusted = [r for r in with_value if not run_flags(r, metric)]
    return Measured(tuple(r.data.metrics[metric] for r in trusted or with_value), flagged=not trusted)


def flagged_runs(runs) -> str:
    """A Markdown section naming every flagged run and why (empty when none is)."""
    lines = [f"- {r.info.run_name} (`{r.info.run_id}`): {', '.join(run_flags(r))}" for r in runs if run_flags(r)]
    if not lines:
        return ""
    return "\n".join([
        "## Flagged runs", "",
        f"A cell is the median over its finished runs, and a timed figure (images/s, seconds) over those with "
        f"steady timing windows (spread at most {TRUSTED_SPREAD_PCT:g} % over two windows or more); a cell that has "
        f"only flagged runs shows their figure, marked {FLAG_MARK}.", "", *lines])


def environment_line(runs) -> str:
    """How many runs, in which states, on which hardware, with which versions and commit."""
    def distinct(param: str) -> str:
        return ", ".join(sorted({r.data.params.get(param, "?") for r in runs}))

    states = Counter(r.info.status.lower() for r in runs)
    return (f"{len(runs)} runs ({', '.join(f'{n} {state}' for state, n in sorted(states.items()))}); "
            f"device {distinct('device_name')}; torch {distinct('torch_version')}, "
            f"CUDA {distinct('cuda_version')}; cnnbench {distinct('git_sha')}")


def finished_runs_with(runs, metric: str) -> list:
    """The FINISHED runs that logged ``metric`` (those of one command), newest first."""
    done = [r for r in runs if metric in r.data.metrics and r.info.status == "FINISHED"]
    return sorted(done, key=lambda r: r.info.start_time, reverse=True)
