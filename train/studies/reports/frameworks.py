"""Framework comparison: each task of ``cnnbench framework`` with PyTorch, TensorFlow/Keras and MXNet side by
side, and the published figures of the two studies in their own columns.

Measured: the runs that carry a ``task`` param. A row is one framework, data format, batch size, precision and
image size; a combination the framework could not run (param ``outcome=unsupported``) shows the reason from
its ``cnnbench.end`` tag instead of a figure. Published: ``train/reference/frameworks_published.csv``
(DeepLearningFrameworks: half a K80 GPU and 6 Xeon E5-2690v3 cores, 2017 versions) and
``keras_backends_published.csv`` (Keras 2.1 on TensorFlow 1.6/1.7 or MXNet 1.1, AWS C5.18xLarge CPU). Their
hardware and versions differ from this machine's: they show the ordering each study found, not figures to reach.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Callable

from train.engine.outbox import END_TAG
from train.engine.schema import TRAIN_IMAGES_PER_SEC, VAL_ERROR
from train.errors import UsageError
from train.studies.figures import percent, significant
from train.studies.published import read_reference
from train.studies.reports.common import environment_line, flagged_runs, markdown_table, measured

ROW = ("framework", "data_format", "batch_size", "precision", "image_size")
FRAMEWORKS = ("pytorch", "tensorflow", "mxnet")
# cnnbench engine -> the study's row: our TensorFlow engine is Keras on TF; our MXNet engine is Gluon, which
# the study trained but did not run inference with (its MXNet inference row stands in)
DLF_ROWS = {
    "vgg-cnn": ("cifar10_vgg_cnn_train", {"pytorch": "pytorch", "tensorflow": "keras_tf", "mxnet": "gluon"}),
    "resnet50-infer": ("resnet50_infer", {"pytorch": "pytorch", "tensorflow": "keras_tf", "mxnet": "mxnet"}),
}
DLF = "DeepLearningFrameworks (K80 GPU / 6-core Xeon, 2017)"
KERAS_MXNET = "Keras-MXNet benchmark (Keras 2.1, C5.18xLarge CPU, synthetic, batch 32)"
TITLES = {
    "vgg-cnn": "VGG-style CNN on CIFAR-10 (vgg-cnn)",
    "resnet50-train": "ResNet-50 training on synthetic data (resnet50-train)",
    "resnet50-infer": "ResNet-50 feature-extraction inference (resnet50-infer)",
}


def render(runs, out_dir: Path) -> Path:
    tasks = defaultdict(lambda: defaultdict(list))  # task -> row -> runs
    for run in runs:
        if "task" in run.data.params:
            tasks[run.data.params["task"]][_key(run)].append(run)
    if not tasks:
        raise UsageError("no `cnnbench framework` runs (param task) in this experiment: nothing to compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(tasks, out_dir / "frameworks.png")
    framework_runs = [r for rows in tasks.values() for group in rows.values() for r in group]
    parts = ["# Framework comparison", __doc__.split("\n\n", 1)[1].strip(), environment_line(framework_runs) + "."]
    for task in sorted(tasks, key=list(TITLES).index):
        parts += [f"## {TITLES[task]}", markdown_table(*TABLES[task](sorted(tasks[task].items(), key=_order)))]
    parts += ["![images/s by framework and data format](frameworks.png)", flagged_runs(framework_runs)]
    path = out_dir / "frameworks.md"
    path.write_text("\n\n".join(part for part in parts if part) + "\n")
    return path


def _key(run) -> tuple[str, ...]:
    return tuple(run.data.params.get(field, "?") for field in ROW)


def _order(item) -> tuple:
    key = item[0]
    rank = FRAMEWORKS.index(key[0]) if key[0] in FRAMEWORKS else len(FRAMEWORKS)
    return rank, *(int(v) if v.isdigit() else v for v in key[1:])


def _describe(key: tuple[str, ...], group: list) -> list[str]:
    params = group[0].data.params
    return [params.get("framework_version", key[0]), key[1], key[2], key[3]]


def _figure(group: list, metric: str, show: Callable[[float], str] = significant, why: bool = True) -> str:
    """The measured median; where there is none, why the framework could not run it (once per row)."""
    cell = measured(group, metric)
    if cell is not None:
        return cell.cell(show)
    unsupported = [r for r in group if r.data.params.get("outcome") == "unsupported"]
    return unsupported[0].data.tags.get(END_TAG, "unsupported") if unsupported and why else "—"


def _whole_percent(value: float) -> str:
    """A window spread in %: whole points are all it tells."""
    return f"{value:.0f}"


def _dlf(task: str, framework: str) -> dict:
    study_task, names = DLF_ROWS[task]
    rows = [r for r in read_reference("frameworks_published")
            if r["task"] == study_task and r["framework"] == names.get(framework)]
    return rows[0] if rows else {}


def _vgg_table(rows) -> tuple[list[str], list[list]]:
    headers = ["framework", "format", "batch", "precision", "epochs", "test top-1 error, final epoch (%)",
               "training s", "images/s", f"{DLF}: row", "test top-1 error (%), 10 epochs", "training s, 10 epochs"]
    table = []
    for key, group in rows:
        published = _dlf("vgg-cnn", key[0])
        table.append([*_describe(key, group), group[0].data.params.get("epochs", "?"),
                      _figure(group, VAL_ERROR, percent), _figure(group, "fit_time_s", why=False),
                      _figure(group, TRAIN_IMAGES_PER_SEC, why=False), published.get("framework", "—"),
                      f"{100 - float(published['test_acc']):.0f}" if published else "—",
                      published.get("train_s", "—")])
    return headers, table


def _train_table(rows) -> tuple[list[str], list[list]]:
    headers = ["framework", "format", "batch", "precision", "model", "image px", "images/s",
               "window spread, last epoch (%)", f"{KERAS_MXNET}: images/s"]
    published = {(r["backend"], r["data_format"]): r["images_per_s"] for r in read_reference("keras_backends_published")
                 if r["data"] == "synthetic" and r["gpus"] == "0" and r["model"] == "resnet50_v1"}
    return headers, [[*_describe(key, group), group[0].data.params.get("arch_resolved", "—"), key[4],
                      _figure(group, TRAIN_IMAGES_PER_SEC),
                      _figure(group, "epoch_images_per_sec_spread", _whole_percent, why=False),
                      published.get((key[0], key[1]), "—")] for key, group in rows]


def _infer_table(rows) -> tuple[list[str], list[list]]:
    headers = ["framework", "format", "batch", "precision", "model", "image px", "images/s", "window spread (%)",
               f"{DLF}: row", "images/s CPU", "images/s GPU"]
    table = []
    for key, group in rows:
        published = _dlf("resnet50-infer", key[0])
        table.append([*_describe(key, group), group[0].data.params.get("arch_resolved", "—"), key[4],
                      _figure(group, "infer_images_per_sec"),
                      _figure(group, "infer_images_per_sec_spread", _whole_percent, why=False),
                      published.get("framework", "—"), published.get("images_per_s_cpu", "—"),
                      published.get("images_per_s_gpu", "—")])
    return headers, table


TABLES = {"vgg-cnn": _vgg_table, "resnet50-train": _train_table, "resnet50-infer": _infer_table}
THROUGHPUT = {"vgg-cnn": TRAIN_IMAGES_PER_SEC, "resnet50-train": TRAIN_IMAGES_PER_SEC,
              "resnet50-infer": "infer_images_per_sec"}


SHORT_FORMAT = {"channels_first": "NCHW", "channels_last": "NHWC"}


def plot(tasks: dict, path: Path) -> None:
    """One panel per task: measured images/s per framework (a colour each) and data format; unsupported runs
    have no bar."""
    from matplotlib.figure import Figure

    names = sorted(tasks, key=list(TITLES).index)
    fig = Figure(figsize=(4.5 * len(names), 3.8), layout="constrained")
    for ax, task in zip(fig.subplots(1, len(names), squeeze=False).ravel(), names):
        bars = []
        for key, group in sorted(tasks[task].items(), key=_order):
            cell = measured(group, THROUGHPUT[task])
            bars.append((f"{key[0]}\n{SHORT_FORMAT.get(key[1], key[1])} b{key[2]}", cell.median if cell else math.nan,
                         f"C{_order((key, group))[0]}"))
        ax.bar(range(len(bars)), [height for _, height, _ in bars], color=[colour for _, _, colour in bars])
        for x, (_, height, _) in enumerate(bars):
            if math.isnan(height):
                ax.text(x, 0, "unsupported", rotation=90, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(bars)), [label for label, _, _ in bars], fontsize=7)
        ax.set_title(TITLES[task], fontsize=9)
        ax.set_ylabel("images/s")
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)
