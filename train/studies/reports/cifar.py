"""CIFAR: published errors beside measured ones: model, parameters, CIFAR-10 and CIFAR-100 top-1 error.

Published, from two sources kept apart, each in its own columns: the project brief's table
(``train/reference/cifar_published.csv``, whose figures are accuracies; here 100 − accuracy) and
bearpaw/pytorch-classification's README (``cifar_bearpaw_readme.csv``, error rates as published; fewer rows).
Measured: a run's ``best_val_top1_err``, its lowest validation error over the epochs, because that is the
figure pytorch-classification's cifar.py prints ("Best acc"); with repeated seeds the median and its 95 %
bootstrap interval, and a difference from a published figure that lies within it is marked not significant.
A run belongs to the row of the net the registry built (``arch_resolved``), so the published "resnet-110" row,
a 164-layer bottleneck net, is held against cnnbench's resnet-164 (README: "ResNet-110 is two different nets").
Runs trained towards a ``--target-top1-err`` show when they reached it ("reached in").
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from train.engine.schema import METRIC_BY_NAME
from train.errors import UsageError
from train.studies import stats
from train.studies.figures import percent, significant
from train.studies.published import read_reference
from train.studies.reports.common import (
    FLAG_MARK,
    NOT_SIGNIFICANT,
    Measured,
    environment_line,
    flagged_runs,
    markdown_table,
    measured,
)

DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
METRIC = "best_val_top1_err"
SOURCES = {  # column label -> (reference file, what it is)
    "brief": ("cifar_published", "the project brief's table, laid out like pytorch-classification's README but "
                                 "with other figures and more rows; its figures are accuracies, shown as "
                                 "100 − accuracy"),
    "README": ("cifar_bearpaw_readme", "bearpaw/pytorch-classification's README at commit 24f1c45, error rates "
                                       "as published; — where it has no row"),
}
PUBLISHED_COLOURS = {"brief": "0.7", "README": "0.4"}  # the plot's bars, light and dark grey
BAR = 0.27  # bar height: three bars per net
HEADERS = ["model", "net", "params (M)", "measured params (M)",
           *(f"{label} {column}" for label in DATASETS.values()
             for column in (*(f"error, {source} (%)" for source in SOURCES), "measured",
                            *(f"Δ {source}" for source in SOURCES), "reached in")),
           "epochs"]


@dataclass(frozen=True)
class Row:
    model: str  # as the brief's table names it
    net: str  # the cnnbench net that matches it
    params_m: str  # published, for 10 classes; "" where not published
    error: dict  # (source, dataset) -> published top-1 error (%), None where not published


def published_rows() -> list[Row]:
    """The brief's rows, in its order, each with the README's figures for the same net where it has them."""
    readme = {r["arch"]: r for r in read_reference(SOURCES["README"][0])}
    rows = []
    for r in read_reference(SOURCES["brief"][0]):
        error = {("brief", ds): _error(r[f"{ds}_top1_acc"]) for ds in DATASETS}
        error |= {("README", ds): _number(readme.get(r["arch"], {}).get(f"{ds}_top1_err", "")) for ds in DATASETS}
        rows.append(Row(r["model"], r["arch"], r["params_m"], error))
    return rows


def _error(accuracy: str) -> float | None:
    return 100 - float(accuracy) if accuracy else None


def _number(text: str) -> float | None:
    return float(text) if text else None


def net_of(run) -> str:
    """The registry name of the net a run trained: ``resnet-164`` for ``cifar/resnet-164``."""
    resolved = run.data.params.get("arch_resolved", "")
    return resolved.removeprefix("cifar/")


def render(runs, out_dir: Path) -> Path:
    cifar = [r for r in runs if r.data.params.get("dataset") in DATASETS]
    if not cifar:
        raise UsageError("no CIFAR-10 or CIFAR-100 runs in this experiment: nothing to set beside the published table")
    by_cell = defaultdict(list)
    for run in cifar:
        by_cell[net_of(run), run.data.params["dataset"]].append(run)
    rows = published_rows()
    known = {row.net for row in rows}
    rows += [Row(net, net, "", {}) for net in sorted({n for n, _ in by_cell} - known)]
    cells = {(row.net, ds): measured(by_cell[row.net, ds], METRIC) for row in rows for ds in DATASETS}
    out_dir.mkdir(parents=True, exist_ok=True)
    plotted = plot(rows, cells, out_dir / "cifar.png")
    path = out_dir / "cifar.md"
    path.write_text(_markdown(rows, cells, by_cell, cifar, plotted))
    return path


def _markdown(rows: list[Row], cells: dict, by_cell: dict, runs: list, plotted: bool) -> str:
    table = markdown_table(HEADERS, [_table_row(row, cells, by_cell) for row in rows])
    plot_line = ("![Published and measured top-1 error per net](cifar.png)" if plotted
                 else f"No plot: no run has logged `{METRIC}` yet.")
    sources = "; ".join(f"**{label}**: {what} (train/reference/{name}.csv)" for label, (name, what) in SOURCES.items())
    parts = [
        "# CIFAR: published top-1 error beside measured",
        f"Top-1 error (%) on the test set. Published, from two sources, each in its own columns: {sources}. "
        f"**Measured**: `{METRIC}` ({METRIC_BY_NAME[METRIC].aggregation}), as pytorch-classification reports its "
        f"best epoch; with repeated seeds the median over the seeds [95 % bootstrap interval over the seeds, n]. "
        f"Δ = measured median − published, for each source; {NOT_SIGNIFICANT}: the published figure lies within "
        f"the measured interval (no significant difference; needs two seeds or more). {stats.FEW_VALUES} "
        f"Reached in: runs trained "
        f"with `--target-top1-err`: the target, then over the runs that reached it the median `time_to_target_s` "
        f"(training seconds to the end of the epoch that reached it, evaluation excluded) and `epochs_to_target`, "
        f"and how many of the finished runs with that target reached it. Params: published for 10 classes, "
        f"measured from the CIFAR-10 runs. Epochs: those of the measured runs (the published ones trained "
        f"164–300).",
        environment_line(runs) + ".",
        table,
        plot_line,
        flagged_runs(runs, METRIC),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _table_row(row: Row, cells: dict, by_cell: dict) -> list[str]:
    params = measured(by_cell[row.net, "cifar10"], "num_params")
    line = [row.model, row.net, row.params_m or "—", significant(params.median / 1e6) if params else "—"]
    for ds in DATASETS:
        published, cell = [row.error.get((source, ds)) for source in SOURCES], cells[row.net, ds]
        line += [*map(_fmt, published), cell.cell(percent) if cell else "—",
                 *(_difference(cell, figure) for figure in published), reached_in(by_cell[row.net, ds])]
    epochs = sorted({int(r.data.params["epochs"]) for ds in DATASETS for r in by_cell[row.net, ds]})
    return line + [", ".join(map(str, epochs)) or "—"]


def _fmt(value: float | None) -> str:
    return "—" if value is None else percent(value)


def _difference(cell: Measured | None, published: float | None) -> str:
    """measured median − published, marked not significant where the measured interval holds the published."""
    if cell is None or published is None:
        return "—"
    text = f"{cell.median - published:+.2f}"
    return f"{text} {NOT_SIGNIFICANT}" if cell.interval and not cell.interval.excludes(published) else text


def reached_in(runs: list) -> str:
    """Per target: median seconds and epochs to it over the finished runs that reached it, and how many did."""
    by_target = defaultdict(list)
    for run in runs:
        if run.info.status == "FINISHED" and "target_top1_err" in run.data.params:
            by_target[float(run.data.params["target_top1_err"])].append(run.data.metrics)
    return "; ".join(_reached(target, metrics) for target, metrics in sorted(by_target.items())) or "—"


def _reached(target: float, runs: list[dict]) -> str:
    reached = [m for m in runs if math.isfinite(m.get("time_to_target_s", math.nan))]
    if not reached:
        return f"≤ {target:g} %: not reached (0 of {len(runs)})"
    seconds = statistics.median(m["time_to_target_s"] for m in reached)
    epochs = statistics.median(m["epochs_to_target"] for m in reached)
    plural = "s" if epochs != 1 else ""
    return f"≤ {target:g} %: {significant(seconds)} s, {epochs:g} epoch{plural} ({len(reached)} of {len(runs)})"


def plot(rows: list[Row], cells: dict, path: Path) -> bool:
    """Horizontal bars per measured net: each source's published error and the measured one side by side, one
    panel per data set."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    shown = [row for row in rows if any(cells[row.net, ds] for ds in DATASETS)]
    if not shown:
        return False
    fig = Figure(figsize=(10, 1.6 + 0.45 * len(shown)), layout="constrained")
    axes = fig.subplots(1, len(DATASETS), sharey=True)
    y = range(len(shown))
    for ax, (ds, label) in zip(axes, DATASETS.items()):
        for i, row in enumerate(shown):
            for offset, (source, colour) in zip((-BAR, 0), PUBLISHED_COLOURS.items()):
                if row.error.get((source, ds)) is not None:
                    ax.barh([i + offset], [row.error[source, ds]], height=BAR, color=colour)
            _measured_bar(ax, i + BAR, cells[row.net, ds])
        ax.set_title(label)
        ax.set_xlabel("top-1 error (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(y), [f"{row.model}\n({row.net})" if row.model != row.net else row.model for row in shown])
    axes[0].invert_yaxis()
    handles = [*(Patch(color=colour, label=f"published, {source}") for source, colour in PUBLISHED_COLOURS.items()),
               Patch(color="tab:blue", label="measured (median, 95 % interval)")]
    if any(cells[row.net, ds] and cells[row.net, ds].flagged for row in shown for ds in DATASETS):
        handles.append(Patch(facecolor="white", edgecolor="tab:blue", hatch="//",
                             label=f"measured from flagged runs {FLAG_MARK}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)))
    fig.savefig(path, dpi=120)
    return True


def _measured_bar(ax, y: float, cell: Measured | None) -> None:
    if cell is None:
        return
    low, high = cell.bounds
    style = {"facecolor": "white", "edgecolor": "tab:blue", "hatch": "//"} if cell.flagged else {"color": "tab:blue"}
    ax.barh([y], [cell.median], height=BAR, xerr=[[cell.median - low], [high - cell.median]], capsize=3, **style)
