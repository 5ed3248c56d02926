"""Training throughput: images/s by arch × batch size × memory format × precision × world size, the speed-up of
each format and precision over NCHW fp32, the scaling efficiency of N workers against one, and a plot of images/s
against batch size (like keras-mxnet's backend tables). One table per device.

Runs are repeats of one cell only when every param that can change the figure is equal: all but the seed and
those that change no figure (``reports.common.settings_of``); cells that the table's columns do not tell apart
(eager and compiled, two SGD implementations, ...) name what else differs in the column "other settings".
With repeats (seeds), a cell is the median over its runs with a 95 % interval, and the speed-up its ratio to the
NCHW fp32 cell of otherwise equal settings, with an interval; ``n.s.`` marks a speed-up whose interval holds 1.
Scaling efficiency = images/s with N workers ÷ (N × images/s with 1 worker) at otherwise equal settings; "1
worker" is every one-process run of those settings, whatever its launcher.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from train.engine.schema import METRIC_BY_NAME, TRAIN_IMAGES_PER_SEC
from train.errors import UsageError
from train.studies import stats
from train.studies.figures import significant
from train.studies.reports.common import (
    FLAG_MARK,
    NO_EFFECT,
    NOT_SIGNIFICANT,
    REPEAT_PARAM,
    Measured,
    environment_line,
    flagged_runs,
    markdown_table,
    measured,
    ratio_cell,
    settings_of,
    varying,
)

METRIC = TRAIN_IMAGES_PER_SEC
# the settings a table row shows; a cell's other settings are named where they tell it from a cell of the same row
ROW = ("device_name", "arch", "dataset", "image_size", "channels_last", "precision", "batch_size", "world_size",
       "launcher")
# what follows from the number of workers: the scaling efficiency's 1-worker run differs in these alone
WORKERS = ("world_size", "launcher", "backend", "global_batch_size", "lr_scaled", "sync_bn")
BASELINE = {"channels_last": "False", "precision": "fp32"}  # what the speed-up column divides by: NCHW fp32
HEADERS = ["arch", "data", "batch / worker", "format", "precision", "launcher", "workers", "other settings",
           "images/s", "vs NCHW fp32", "images/s per worker", "scaling efficiency"]


Cell = tuple  # a cell's settings, as sorted (param, value) pairs


def _cell_of(run) -> Cell:
    return tuple(settings_of(run).items())


def _shown(cell: Cell) -> tuple[str, ...]:
    settings = dict(cell)
    return tuple(settings.get(field, "?") for field in ROW)


def _order(cell: Cell) -> tuple:
    """Rows sorted as people read the tables: numbers as numbers (and before a missing "?"), then the rest."""
    return tuple((0, int(v), "") if v.isdigit() else (1, 0, v) for v in (*_shown(cell), *map(str, cell)))


def _one_worker_key(cell: Cell) -> Cell:
    return tuple((k, v) for k, v in cell if k not in WORKERS)


def render(runs, out_dir: Path) -> Path:
    timed = [r for r in runs if math.isfinite(r.data.metrics.get(METRIC, math.nan))]
    if not timed:
        raise UsageError(f"no run in this experiment logged {METRIC}: nothing to tabulate")
    groups = defaultdict(list)
    for run in timed:
        groups[_cell_of(run)].append(run)
    figures = {cell: measured(group, METRIC) for cell, group in sorted(groups.items(), key=lambda kv: _order(kv[0]))}
    one_worker = defaultdict(list)
    for run in timed:
        if run.data.params.get("world_size") == "1":
            one_worker[_one_worker_key(_cell_of(run))].append(run)
    baselines = {key: measured(group, METRIC) for key, group in one_worker.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(figures, out_dir / "throughput.png")
    path = out_dir / "throughput.md"
    path.write_text(_markdown(figures, baselines, runs))
    return path


def other_settings(figures: dict) -> dict[Cell, str]:
    """Per cell, the params by which it differs from the other cells of its row (its shown settings), as
    ``compile=True, sgd_impl=fused``; "" where it is alone in its row."""
    rows = defaultdict(list)
    for cell in figures:
        rows[_shown(cell)].append(dict(cell))
    return {cell: ", ".join(f"{k}={dict(cell).get(k, '?')}" for k in varying(rows[_shown(cell)])) for cell in figures}


def _markdown(figures: dict, baselines: dict, runs: list) -> str:
    metric = METRIC_BY_NAME[METRIC]
    parts = [
        "# Training throughput",
        f"`{METRIC}` ({metric.unit}, all workers together): {metric.aggregation}; with "
        f"repeats the median over the runs [95 % interval, n runs]. A cell holds the runs whose params are all "
        f"equal but {REPEAT_PARAM} and {', '.join(sorted(NO_EFFECT))} (which change no figure here): no other "
        f"setting is folded into a cell; where cells share a row's columns, \"other settings\" names what "
        f"else differs. vs NCHW fp32: images/s ÷ that of the NCHW fp32 cell with otherwise equal settings; with "
        f"repeats on both sides its 95 % interval, marked {NOT_SIGNIFICANT} where the interval holds 1 (no "
        f"significant difference). Scaling efficiency = images/s with N workers ÷ (N × images/s with 1 worker) "
        f"at otherwise equal settings, the 1-worker runs of any launcher folded together. {stats.METHOD}",
        environment_line(runs) + ".",
    ]
    others = other_settings(figures)
    for device in sorted({_shown(cell)[0] for cell in figures}):
        rows = [_table_row(cell, figure, others[cell], figures, baselines)
                for cell, figure in figures.items() if _shown(cell)[0] == device]
        parts += [f"## {device}", markdown_table(HEADERS, rows)]
    parts += ["![Training images/s against batch size](throughput.png)", flagged_runs(runs)]
    return "\n\n".join(part for part in parts if part) + "\n"


def _table_row(cell: Cell, figure: Measured, other: str, figures: dict, baselines: dict) -> list[str]:
    fields = dict(zip(ROW, _shown(cell)))
    world = int(fields["world_size"])
    return [fields["arch"], f"{fields['dataset']} {fields['image_size']} px", fields["batch_size"],
            _format(fields["channels_last"]), fields["precision"], fields["launcher"], str(world), other or "—",
            figure.cell(), _speed_up(cell, figure, figures), significant(figure.median / world),
            _efficiency(figure, world, baselines.get(_one_worker_key(cell)))]


def _speed_up(cell: Cell, figure: Measured, figures: dict) -> str:
    """This cell's images/s over the NCHW fp32 cell's with otherwise equal settings."""
    settings = dict(cell)
    if all(settings.get(key) == value for key, value in BASELINE.items()):
        return "(baseline)"
    baseline = figures.get(tuple(sorted({**settings, **BASELINE}.items())))
    return ratio_cell(figure, baseline) if baseline else "— (no NCHW fp32 run)"


def _format(channels_last: str) -> str:
    return "NHWC" if channels_last == "True" else "NCHW"


def _efficiency(cell: Measured, world: int, baseline: Measured | None) -> str:
    if world == 1:
        return "(1 worker)"
    if baseline is None:
        return "— (no 1-worker run)"
    efficiency = f"{100 * cell.median / (world * baseline.median):.1f} %"
    return f"{efficiency} {FLAG_MARK}" if cell.flagged or baseline.flagged else efficiency


def plot(figures: dict, path: Path) -> None:
    """images/s against batch size: one panel per (device,) arch, one line per format, precision and workers."""
    from matplotlib.figure import Figure

    panels = defaultdict(lambda: defaultdict(list))  # panel -> series -> [(batch, cell)]
    others = other_settings(figures)
    for key, cell in figures.items():
        f = dict(zip(ROW, _shown(key)))
        series = f"{_format(f['channels_last'])} {f['precision']}, {f['launcher']} × {f['world_size']}"
        series += f" ({others[key]})" if others[key] else ""
        panels[f["device_name"], f["arch"]][series].append((int(f["batch_size"]), cell))
    several_devices = len({device for device, _ in panels}) > 1
    colours = {s: f"C{i % 10}" for i, s in enumerate(sorted({s for series in panels.values() for s in series}))}
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(max(5.5, 4.2 * ncols), 3.4 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, ((device, arch), series) in zip(axes, sorted(panels.items())):
        for name, points in sorted(series.items()):
            _plot_series(ax, sorted(points, key=lambda p: p[0]), colours[name], name)
        batches = sorted({b for points in series.values() for b, _ in points})
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_title(f"{arch} — {device}" if several_devices else arch, fontsize=10)
        ax.set_xlabel("batch size per worker (images)")
        ax.set_ylabel("training throughput (images/s)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:len(panels)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=9,  # as wide as the panels
               title=f"format precision, launcher × workers   (bars: 95 % interval over repeats; hollow: flagged runs "
                     f"{FLAG_MARK})", title_fontsize=9)
    fig.savefig(path, dpi=120)


def _plot_series(ax, points: list[tuple[int, Measured]], colour: str, label: str) -> None:
    batches = [b for b, _ in points]
    medians = [cell.median for _, cell in points]
    spread = [[c.median - c.bounds[0] for _, c in points], [c.bounds[1] - c.median for _, c in points]]
    ax.errorbar(batches, medians, yerr=spread, color=colour, marker="o", capsize=3, label=label)
    flagged = [(b, c.median) for b, c in points if c.flagged]
    if flagged:
        ax.plot(*zip(*flagged), linestyle="none", marker="o", markerfacecolor="white", markeredgecolor=colour,
                markeredgewidth=1.5, zorder=3)
