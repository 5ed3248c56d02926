"""pytorch-classification's CIFAR table, published beside measured: model, parameters, CIFAR-10 and CIFAR-100 error.

Published: ``train/reference/cifar_published.csv``, whose figures are accuracies; here they are errors
(100 − accuracy). Measured: a run's ``best_val_top1_err``, its lowest validation error over the epochs,
because that is the figure pytorch-classification's cifar.py prints ("Best acc"). A run belongs to the row of
the net the registry built (``arch_resolved``), so the published "resnet-110" row, a 164-layer bottleneck
net, is held against cnnbench's resnet-164 (README: "ResNet-110 is two different nets").
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from train.engine.schema import METRIC_BY_NAME
from train.errors import UsageError
from train.studies.published import read_reference
from train.studies.reports.common import FLAG_MARK, Measured, environment_line, flagged_runs, markdown_table, measured

DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
METRIC = "best_val_top1_err"
SOURCE = "bearpaw/pytorch-classification"
HEADERS = ["model", "net", "params (M)", "measured params (M)",
           *(f"{label} {column}" for label in DATASETS.values() for column in ("error (%)", "measured", "Δ")),
           "epochs"]


@dataclass(frozen=True)
class Row:
    model: str  # as the published table names it
    net: str  # the cnnbench net that matches it
    params_m: str  # published, for 10 classes; "" where not published
    error: dict  # dataset -> published top-1 error (%), None where not published


def published_rows() -> list[Row]:
    return [Row(r["model"], r["arch"], r["params_m"], {ds: _error(r[f"{ds}_top1_acc"]) for ds in DATASETS})
            for r in read_reference("cifar_published")]


def _error(accuracy: str) -> float | None:
    return 100 - float(accuracy) if accuracy else None


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
    rows += [Row(net, net, "", dict.fromkeys(DATASETS)) for net in sorted({n for n, _ in by_cell} - known)]
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
    parts = [
        "# CIFAR: pytorch-classification's table, published beside measured",
        f"Top-1 error (%) on the test set. **Published**: {SOURCE} (train/reference/cifar_published.csv; that "
        f"table's figures are accuracies, shown here as 100 − accuracy). **Measured**: `{METRIC}` "
        f"({METRIC_BY_NAME[METRIC].aggregation}), as pytorch-classification reports its best epoch; with repeated "
        f"seeds the median (min–max, n). Δ = measured − published. Params: published for 10 classes, measured "
        f"from the CIFAR-10 runs. Epochs: those of the measured runs (the published ones trained 164–300).",
        environment_line(runs) + ".",
        table,
        plot_line,
        flagged_runs(runs),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _table_row(row: Row, cells: dict, by_cell: dict) -> list[str]:
    params = measured(by_cell[row.net, "cifar10"], "num_params")
    line = [row.model, row.net, row.params_m or "—", f"{params.median / 1e6:.2f}" if params else "—"]
    for ds in DATASETS:
        published, cell = row.error[ds], cells[row.net, ds]
        line += [_fmt(published), cell.cell(".2f") if cell else "—",
                 f"{cell.median - published:+.2f}" if cell and published is not None else "—"]
    epochs = sorted({int(r.data.params["epochs"]) for ds in DATASETS for r in by_cell[row.net, ds]})
    return line + [", ".join(map(str, epochs)) or "—"]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def plot(rows: list[Row], cells: dict, path: Path) -> bool:
    """Horizontal bars per measured net: published and measured error side by side, one panel per data set."""
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
            if row.error[ds] is not None:
                ax.barh([i - 0.2], [row.error[ds]], height=0.4, color="0.7")
            _measured_bar(ax, i + 0.2, cells[row.net, ds])
        ax.set_title(label)
        ax.set_xlabel("top-1 error (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(y), [f"{row.model}\n({row.net})" if row.model != row.net else row.model for row in shown])
    axes[0].invert_yaxis()
    handles = [Patch(color="0.7", label="published"), Patch(color="tab:blue", label="measured (median, min–max)")]
    if any(cells[row.net, ds] and cells[row.net, ds].flagged for row in shown for ds in DATASETS):
        handles.append(Patch(facecolor="white", edgecolor="tab:blue", hatch="//",
                             label=f"measured from flagged runs {FLAG_MARK}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    fig.savefig(path, dpi=120)
    return True


def _measured_bar(ax, y: float, cell: Measured | None) -> None:
    if cell is None:
        return
    spread = [[cell.median - min(cell.values)], [max(cell.values) - cell.median]]
    style = {"facecolor": "white", "edgecolor": "tab:blue", "hatch": "//"} if cell.flagged else {"color": "tab:blue"}
    ax.barh([y], [cell.median], height=0.4, xerr=spread, capsize=3, **style)
