"""CIFAR: published errors beside measured ones: model, parameters, CIFAR-10 and CIFAR-100 top-1 error.

Published, from two sources kept apart, each in its own columns: the project brief's table
(``train/reference/cifar_published.csv``, whose figures are accuracies; here 100 − accuracy) and
bearpaw/pytorch-classification's README (``cifar_bearpaw_readme.csv``, error rates as published; fewer rows).
Measured: a run's val error, ``final_val_top1_err`` (after the last epoch), the one val error of a run everywhere in
cnnbench; beside it the best epoch's, ``best_val_top1_err``, the figure pytorch-classification's cifar.py prints
("Best acc"), chosen on the test set itself and so optimistic; with repeated seeds the median and its 95 % interval.
Beside each published figure (a best epoch): the best-epoch difference and a reproduction verdict
(``reproduction``): reproduced where the published figure lies in the measured interval, better or worse where the
interval lies below or above it, with the runs that ``compare`` needs for a verdict (train/studies/stats.py); and
the settings that most often explain a gap: global batch, learning rate after scaling, epochs.
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

from train.engine.schema import METRIC_BY_NAME, VAL_ERROR
from train.errors import UsageError
from train.studies import stats
from train.studies.figures import percent, significant
from train.studies.published import read_reference
from train.studies.reports.common import (
    FLAG_MARK,
    Measured,
    environment_line,
    flagged_runs,
    markdown_table,
    measured,
    settings_of,
    varying,
)

DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
METRIC = VAL_ERROR
BEST = "best_val_top1_err"
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
             for column in (*(f"error, {source} (%)" for source in SOURCES), "measured, final epoch (%)",
                            "measured, best epoch (%)", *(f"Δ {source}, best epoch: verdict" for source in SOURCES),
                            "settings", "reached in"))]
VERDICTS = {0: "reproduced", -1: "better", 1: "worse"}  # the measured error's interval holds, lies below, above
# the effective settings that most often explain a gap to a published figure (the augmentation is the CIFAR
# loader's for every run: random crop with 4 px padding and horizontal flip, as pytorch-classification's)
GAP_SETTINGS = (("global_batch_size", "global batch {}"), ("lr_scaled", "lr {}"), ("epochs", "epochs {}"))


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
        f"**Measured, final epoch**: `{METRIC}`, the {METRIC_BY_NAME[METRIC].aggregation} (a run's one val "
        f"error everywhere in cnnbench); **measured, best epoch**: `{BEST}`, the "
        f"{METRIC_BY_NAME[BEST].aggregation}, the figure pytorch-classification's cifar.py prints (\"Best acc\"); "
        f"with repeated seeds the median over the seeds [95 % interval of the median seed, n]. "
        f"Δ = measured best-epoch median − published, for each source (like for like: the published figures are "
        f"best epochs), and a verdict: reproduced where the published "
        f"figure lies in the measured interval, better (lower error) or worse where the interval lies below or "
        f"above it; with fewer than {stats.RUNS_NEEDED} seeds too few runs, and no verdict from "
        f"seeds that all gave the same error. {stats.METHOD} Settings: those of the measured runs that most "
        f"often explain a gap (global batch, learning rate after --lr-scaling, epochs; the published nets "
        f"trained at batch 128 for 164–300 epochs); the augmentation, random 32 px crops with 4 px padding and "
        f"horizontal flips, is that of pytorch-classification on every run. Reached in: runs trained "
        f"with `--target-top1-err`: the target, then over the runs that reached it the median `time_to_target_s` "
        f"(wall seconds from run start to the end of the evaluation that reached it, as MLPerf counts them) and "
        f"`epochs_to_target`, "
        f"and how many of the finished runs with that target reached it. Params: published for 10 classes, "
        f"measured from the CIFAR-10 runs.",
        environment_line(runs) + ".",
        folded(by_cell),
        table,
        plot_line,
        flagged_runs(runs),  # every flag: the "reached in" seconds are timed figures
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def folded(by_cell: dict) -> str:
    """Above the table: the cells whose runs differ in more than their seed, and in which settings (a row is a net
    of the published table, so every run of that net and data set is one cell)."""
    lines = []
    for (net, ds), runs in sorted(by_cell.items()):
        settings = [settings_of(r) for r in runs]
        shown = "; ".join(f"{k} {'/'.join(sorted({s.get(k, '?') for s in settings}))}" for k in varying(settings))
        lines += [f"{net} {DATASETS[ds]}: {shown}"] if shown else []
    if not lines:
        return ""
    return "Cells that fold runs of different settings (besides the seed): " + "; ".join(lines) + "."


def _table_row(row: Row, cells: dict, by_cell: dict) -> list[str]:
    params = measured(by_cell[row.net, "cifar10"], "num_params")
    line = [row.model, row.net, row.params_m or "—", significant(params.median / 1e6) if params else "—"]
    for ds in DATASETS:
        published, cell = [row.error.get((source, ds)) for source in SOURCES], cells[row.net, ds]
        best = measured(by_cell[row.net, ds], BEST)
        line += [*map(_fmt, published), cell.cell(percent) if cell else "—", best.cell(percent) if best else "—",
                 *(reproduction(best, figure) for figure in published), gap_settings(by_cell[row.net, ds]),
                 reached_in(by_cell[row.net, ds])]
    return line


def _fmt(value: float | None) -> str:
    return "—" if value is None else percent(value)


def reproduction(cell: Measured | None, published: float | None) -> str:
    """measured median − published, and whether the measured runs reproduce the published figure."""
    if cell is None or published is None:
        return "—"
    difference = f"{cell.median - published:+.2f}"
    runs = (len(cell.values),)
    if not stats.enough_runs(runs):
        return f"{difference}, too few runs ({runs[0]} of {stats.RUNS_NEEDED})"
    interval = stats.median_interval([[v] for v in cell.values])
    if stats.withheld(runs, interval):
        return f"{difference}, no verdict"
    return f"{difference}, {VERDICTS[stats.side_of(interval, published)]}"


def gap_settings(runs: list) -> str:
    """The measured runs' global batch, lr after scaling and epochs (each distinct value)."""
    if not runs:
        return "—"
    shown = []
    for param, text in GAP_SETTINGS:
        values = sorted({r.data.params.get(param, "?") for r in runs}, key=lambda v: (len(v), v))
        shown.append(text.format("/".join(values)))
    return ", ".join(shown)


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
               Patch(color="tab:blue", label="measured, final epoch (median, 95 % interval)")]
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
