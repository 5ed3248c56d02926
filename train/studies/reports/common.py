"""What every report needs: which runs to flag, and Markdown tables."""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass

SPREAD_LIMIT_PCT = 10.0  # timing windows that disagree by more than this make a throughput figure suspect


def run_flags(run) -> list[str]:
    """Why a figure from ``run`` must be marked in a report (empty when it can be trusted)."""
    flags = []
    if run.info.status != "FINISHED":
        flags.append(f"run {run.info.status.lower()}")
    spread = run.data.metrics.get("train_images_per_sec_spread")
    if spread is not None and spread == spread and spread > SPREAD_LIMIT_PCT:  # NaN: fewer than two windows
        flags.append(f"windows spread {spread:.0f} %")
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

    def cell(self, spec: str) -> str:
        """``median`` formatted with ``spec``; with repeats also ``(min–max, n=N)``; marked when flagged."""
        text = format(self.median, spec)
        if len(self.values) > 1:
            text += f" ({min(self.values):{spec}}–{max(self.values):{spec}}, n={len(self.values)})"
        return f"{text} {FLAG_MARK}" if self.flagged else text


def measured(runs, metric: str) -> Measured | None:
    """``metric`` over ``runs``: from the trusted runs, or, where all are flagged, from those, marked."""
    with_value = [r for r in runs if math.isfinite(r.data.metrics.get(metric, math.nan))]
    if not with_value:
        return None
    trusted = [r for r in with_value if not run_flags(r)]
    return Measured(tuple(r.data.metrics[metric] for r in trusted or with_value), flagged=not trusted)


def flagged_runs(runs) -> str:
    """A Markdown section naming every flagged run and why (empty when none is)."""
    lines = [f"- {r.info.run_name} (`{r.info.run_id}`): {', '.join(run_flags(r))}" for r in runs if run_flags(r)]
    if not lines:
        return ""
    return "\n".join([
        "## Flagged runs", "",
        f"A cell is the median over its finished runs with steady timing windows; a cell that has only "
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
