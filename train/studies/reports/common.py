"""What every report needs: which runs to flag, Markdown tables, and cells of measured figures."""
from __future__ import annotations

import functools
import math
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from train.engine.schema import TRUSTED_SPREAD_PCT, is_trusted_spread
from train.studies import stats
from train.studies.figures import significant

def run_flags(run, metric: str | None = None) -> list[str]:
    """Why a figure (``metric``; None: any) from ``run`` must be marked in a report (empty when it can be trusted).
    Timing windows say nothing of an accuracy, so they mark only images/s figures."""
    flags = []
    if run.info.status != "FINISHED":
        flags.append(f"run {run.info.status.lower()}")
    spread = run.data.metrics.get("train_images_per_sec_spread")
    timed = metric is None or "images_per_sec" in metric
    if timed and spread is not None and not is_trusted_spread(spread):
        flags.append(f"windows spread {spread:.0f} % (over {TRUSTED_SPREAD_PCT:g} %)" if math.isfinite(spread)
                     else "one timing window: no spread to tell a steady figure")
    return flags


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
        """The median's 95 % bootstrap interval over the runs (``train.studies.stats``); None for one run."""
        return stats.median_interval([[v] for v in self.values]) if len(self.values) > 1 else None

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
    """cell / baseline as ``1.52×``; with repeats on both sides also its 95 % interval, and ``n.s.`` where that
    interval holds 1 (the same bootstrap over runs as the cells' intervals); marked when either is flagged."""
    flag = f" {FLAG_MARK}" if cell.flagged or baseline.flagged else ""
    if not (cell.interval and baseline.interval):
        return f"{cell.median / baseline.median:.2f}×{flag}"
    _, _, ratio = stats.ratio_interval([[v] for v in baseline.values], [[v] for v in cell.values])
    text = f"{ratio.estimate:.2f}× [{ratio.low:.2f}–{ratio.high:.2f}]"
    return (text if stats.direction(ratio) else f"{text} {NOT_SIGNIFICANT}") + flag


def measured(runs, metric: str) -> Measured | None:
    """``metric`` over ``runs``: from the trusted runs, or, where all are flagged, from those, marked."""
    with_value = [r for r in runs if math.isfinite(r.data.metrics.get(metric, math.nan))]
    if not with_value:
        return None
    trusted = [r for r in with_value if not run_flags(r, metric)]
    return Measured(tuple(r.data.metrics[metric] for r in trusted or with_value), flagged=not trusted)


def flagged_runs(runs, metric: str | None = None) -> str:
    """A Markdown section naming every run flagged for ``metric`` (None: any figure) and why (empty when none is)."""
    lines = [f"- {r.info.run_name} (`{r.info.run_id}`): {', '.join(run_flags(r, metric))}"
             for r in runs if run_flags(r, metric)]
    if not lines:
        return ""
    return "\n".join([
        "## Flagged runs", "",
        f"A cell is the median over its finished runs (for images/s: with steady timing windows, spread at most "
        f"{TRUSTED_SPREAD_PCT:g} % over two windows or more); a cell that has only "
        f"flagged runs shows their figure, marked {FLAG_MARK}.", "", *lines])


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
