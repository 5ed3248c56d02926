"""The complexity report of ``cnnbench analyze`` runs, after Bianco et al. 2018: a Markdown table and three plots.

- accuracy vs forward FLOPs per image, marker area proportional to parameters (the paper's figure);
- accuracy vs images/s, at the smallest and the largest batch size every net was measured at;
- latency vs batch size (median, with a bar up to the 95th percentile).

Accuracy is Acc@1 measured by ``cnnbench evaluate`` in the same experiment (newest finished run of the net);
where there is none, the published one of the reference ranking (hollow markers, "published" in the legend);
nets with neither are left out of the accuracy plots and say so. One setting is reported at a time (device,
precision, channels-last, compile): that of the newest analysis, with the newest run of each net in it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from train.engine.schema import split_batch_size
from train.errors import UsageError
from train.studies.figures import significant
from train.studies.reports.common import finished_runs_with, markdown_table
from train.studies.reports.imagenet import STUDY, evaluation_runs, published_accuracy

SETTING = ("device_name", "precision", "channels_last", "compile")
PER_BATCH = ("latency_median_ms", "latency_p95_ms", "forward_images_per_sec", "forward_peak_mem_mib")  # table columns
PLOTS = {
    "flops": "complexity_accuracy_vs_flops.png",
    "speed": "complexity_accuracy_vs_images_per_sec.png",
    "latency": "complexity_latency_vs_batch_size.png",
}


@dataclass
class Net:
    label: str  # the arch as typed
    resolved: str
    input_size: int
    params: float
    flops: float
    train_images_per_sec: float
    train_batch: int
    by_batch: dict[int, dict[str, float]]  # batch size -> {metric: value}
    accuracy: float | None
    measured: bool  # accuracy measured by `cnnbench evaluate`, not published

    @classmethod
    def from_run(cls, run, accuracies: dict[str, tuple[float, bool]]) -> "Net":
        m, p = run.data.metrics, run.data.params
        by_batch: dict[int, dict[str, float]] = {}
        for name, value in m.items():
            split = split_batch_size(name)
            if split:
                by_batch.setdefault(split[1], {})[split[0]] = value
        accuracy, measured = accuracies.get(p["arch_resolved"], (None, False))
        return cls(p["arch"], p["arch_resolved"], int(p["image_size"]), m["num_params"], m["flops_per_image"],
                   m["train_step_images_per_sec"], int(p["batch_size"]), dict(sorted(by_batch.items())),
                   accuracy, measured)

    @property
    def legend(self) -> str:
        return self.label if self.accuracy is None or self.measured else f"{self.label} (published acc.)"


def analysis_runs(runs) -> list:
    """Finished analyses, newest first."""
    return finished_runs_with(runs, "train_step_images_per_sec")


def render(runs, out_dir: Path) -> Path:
    analysed = analysis_runs(runs)
    if not analysed:
        raise UsageError("no finished `cnnbench analyze` runs in this experiment: nothing to report")
    setting = _setting(analysed[0])
    chosen = _newest_per_net([r for r in analysed if _setting(r) == setting])
    nets = [Net.from_run(r, _accuracies(runs)) for r in chosen]
    out_dir.mkdir(parents=True, exist_ok=True)
    title = _title(chosen[0])
    _accuracy_vs_flops(nets, title, out_dir / PLOTS["flops"])
    _accuracy_vs_speed(nets, title, out_dir / PLOTS["speed"])
    _latency_vs_batch(nets, title, out_dir / PLOTS["latency"])
    path = out_dir / "complexity.md"
    path.write_text(_markdown(nets, chosen, len(analysed) - len(chosen)))
    return path


def _setting(run) -> tuple:
    return tuple(run.data.params.get(k) for k in SETTING)


def _newest_per_net(runs: list) -> list:
    seen, kept = set(), []
    for run in runs:
        if run.data.params["arch_resolved"] not in seen:
            seen.add(run.data.params["arch_resolved"])
            kept.append(run)
    return kept


def _accuracies(runs) -> dict[str, tuple[float, bool]]:
    """Net -> (Acc@1 %, measured here?): the newest evaluation, else the reference ranking."""
    found = {net: (row["acc1"], False) for net, row in published_accuracy().items()}
    for run in reversed(evaluation_runs(runs)):  # oldest first, so the newest overwrites
        found[run.data.params["arch_resolved"]] = (run.data.metrics["eval_top1_acc"], True)
    return found


def _title(run) -> str:
    p = run.data.params
    extras = [p["precision"]] + ["channels-last"] * (p["channels_last"] == "True") + ["compiled"] * (p["compile"] == "True")
    threads = f"{p['num_threads']} thread{'' if p['num_threads'] == '1' else 's'}"
    return f"{p['device_name']} ({p['device']}, {threads}), {', '.join(extras)}"


# ---- plots -------------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _plain_numbers(axis) -> None:
    """Log-scale ticks labelled 0.2, 0.5, 1, 2, 5, 10, 20 ... rather than as powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _colours(nets: list[Net]) -> dict[str, tuple]:
    """tab20's dark shades first, then its light ones: the first ten nets get ten clearly different colours."""
    cmap = _pyplot().get_cmap("tab20")
    return {n.label: cmap((2 * i) % 20 + (2 * i // 20) % 2) for i, n in enumerate(nets)}


def _marker_area(params: float, largest: float) -> float:
    """Area in pt^2 proportional to parameters; the largest net gets 1500."""
    return 1500 * params / largest


def _accuracy_scatter(ax, nets: list[Net], x_of, colours: dict, largest_params: float) -> None:
    for n in nets:
        colour = colours[n.label]
        ax.scatter([x_of(n)], [n.accuracy], s=_marker_area(n.params, largest_params), alpha=0.6 if n.measured else 1,
                   facecolors=colour if n.measured else "none", edgecolors=colour, linewidths=1.5)
        ax.annotate(n.label, (x_of(n), n.accuracy), fontsize=7, ha="center", va="center")
    ax.set_xscale("log")
    ax.margins(x=0.1, y=0.08)  # room for the largest markers at the edges
    _plain_numbers(ax.xaxis)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)


def _legends(ax, nets: list[Net], colours: dict, largest_params: float, missing: list[Net]) -> list:
    """Nets (filled = Acc@1 measured by `cnnbench evaluate`, hollow = published) and a scale of marker sizes."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", markersize=9, markerfacecolor=colours[n.label] if n.measured
                      else "none", markeredgecolor=colours[n.label], label=n.legend) for n in nets]
    title = "filled: Acc@1 measured by cnnbench evaluate\nhollow: published Acc@1 (ranking study)"
    if missing:
        title += "\nno accuracy known, not shown:\n" + ", ".join(n.label for n in missing)
    first = ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8,
                      title_fontsize=8)
    ax.add_artist(first)
    scale = [v for v in (1e6, 10e6, 100e6) if v <= 2 * largest_params] or [largest_params]
    sizes = [ax.scatter([], [], s=_marker_area(v, largest_params), facecolors="none", edgecolors="grey",
                        label=f"{v / 1e6:g} M") for v in scale]
    second = ax.legend(handles=sizes, title="parameters", loc="lower left", bbox_to_anchor=(1.02, 0), fontsize=8,
                       title_fontsize=8, labelspacing=2.5, borderpad=1.2, handletextpad=2)
    return [first, second]  # outside the axes: savefig must be told to keep them


def _accuracy_vs_flops(nets: list[Net], title: str, path: Path) -> None:
    plt = _pyplot()
    known = [n for n in nets if n.accuracy is not None]
    colours, largest = _colours(nets), max(n.params for n in nets)
    fig, ax = plt.subplots(figsize=(11, 6.5))
    _accuracy_scatter(ax, known, lambda n: n.flops / 1e9, colours, largest)
    ax.set_xlabel("forward GFLOPs per image at the native input size (log scale; multiply-add = 2 FLOPs)")
    ax.set_title(f"Accuracy vs operations, marker area ∝ parameters\n{title}", fontsize=10)
    _save(fig, path, _legends(ax, known, colours, largest, [n for n in nets if n.accuracy is None]))


def _accuracy_vs_speed(nets: list[Net], title: str, path: Path) -> None:
    plt = _pyplot()
    known = [n for n in nets if n.accuracy is not None]
    colours, largest = _colours(nets), max(n.params for n in nets)
    batches = _speed_batches(nets)
    fig, axes = plt.subplots(1, len(batches), figsize=(7 + 4 * len(batches), 6.5), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        measured = [n for n in known if batch in n.by_batch]
        _accuracy_scatter(ax, measured, lambda n: n.by_batch[batch]["forward_images_per_sec"], colours, largest)
        ax.set_xlabel(f"inference images/s at batch size {batch} (log scale)")
        ax.set_title(f"batch size {batch}", fontsize=10)
    heading = fig.suptitle(f"Accuracy vs inference speed, marker area ∝ parameters\n{title}", fontsize=10)
    missing = [n for n in nets if n.accuracy is None]
    _save(fig, path, [heading, *_legends(axes[0][-1], known, colours, largest, missing)])


def _speed_batches(nets: list[Net]) -> list[int]:
    """The smallest and the largest batch size of the newest analysis (a net measured at others is left out there)."""
    sizes = list(nets[0].by_batch)
    return sorted({sizes[0], sizes[-1]})


def _latency_vs_batch(nets: list[Net], title: str, path: Path) -> None:
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    colours = _colours(nets)
    fig, ax = plt.subplots(figsize=(11, 6.5))
    for i, n in enumerate(nets):
        batches = list(n.by_batch)
        median = [n.by_batch[b]["latency_median_ms"] for b in batches]
        p95 = [n.by_batch[b]["latency_p95_ms"] for b in batches]
        ax.errorbar(batches, median, yerr=[[0] * len(batches), [hi - mid for hi, mid in zip(p95, median)]],
                    color=colours[n.label], marker="osD^v"[i // 20 % 5], capsize=3, label=n.label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({b for n in nets for b in n.by_batch}))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())  # the measured batch sizes only
    ax.set_yscale("log")
    _plain_numbers(ax.yaxis)
    ax.set_xlabel("batch size (log scale)")
    ax.set_ylabel("forward latency per batch (ms, log scale): median, bar up to p95")
    ax.set_title(f"Latency vs batch size\n{title}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path, [ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)])


def _save(fig, path: Path, legends: list) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight", bbox_extra_artists=legends)
    _pyplot().close(fig)


# ---- Markdown ----------------------------------------------------------------------------------------------

def _markdown(nets: list[Net], runs: list, older: int) -> str:
    p = runs[0].data.params
    smallest, largest = _speed_batches(nets)[0], _speed_batches(nets)[-1]
    summary = [[n.label, n.resolved, n.input_size, significant(n.params / 1e6), significant(n.flops / 1e9),
                significant(n.flops / 2e9), _accuracy_cell(n), _cell(n, smallest, "latency_median_ms"),
                _cell(n, largest, "forward_images_per_sec"), significant(n.train_images_per_sec)]
               for n in sorted(nets, key=lambda n: n.flops)]
    per_batch = [[n.label, b, *(significant(v[metric]) for metric in PER_BATCH)]
                 for n in sorted(nets, key=lambda n: n.flops) for b, v in n.by_batch.items()]
    parts = [
        "# Complexity of ImageNet nets (after Bianco et al. 2018)",
        f"{_title(runs[0])}; torch {p['torch_version']}, torchvision {p['torchvision_version']}, "
        f"timm {p['timm_version']}, cnnbench {p['git_sha']}. Random weights at each net's native input size; "
        f"latency over {p['timed_iters']} timed forward passes after {p['warmup_iters']} untimed ones, the device "
        "synchronised around each; images/s = batch size / median latency. GFLOPs and GMACs: forward pass of one "
        "image; GMACs = GFLOPs / 2 (a multiply-add is 2 FLOPs). timm quotes GMACs, and torchvision's \"GFLOPS\" "
        "count multiply-adds too (ResNet-50: 4.09).",
        markdown_table(["arch", "net", "input", "params (M)", "GFLOPs", "GMACs", "Acc@1 %",
                        f"latency ms at batch {smallest}", f"images/s at batch {largest}",
                        f"training images/s (batch {p['batch_size']})"], summary),
        markdown_table(["arch", "batch", "latency median ms", "latency p95 ms", "images/s", "peak memory MiB"],
                       per_batch),
        "Peak memory: on CUDA the most allocated by tensors during the passes; on CPU the process's peak resident "
        "set during them, counted from a reset after memory freed by earlier nets was handed back to the system: "
        "it includes the Python process and its libraries as well as the weights and activations.",
        f"Acc@1: measured = by `cnnbench evaluate` in this experiment; published = *{STUDY}*.",
        "Plots: " + ", ".join(f"[{name}]({name})" for name in PLOTS.values()),
    ]
    if older:
        parts.append(f"Left out: {older} older runs of these nets, or runs of another device, precision, "
                     "channels-last or compile setting.")
    return "\n\n".join(parts) + "\n"


def _cell(n: Net, batch: int, metric: str) -> str:
    return significant(n.by_batch[batch][metric]) if batch in n.by_batch else "–"


def _accuracy_cell(n: Net) -> str:
    if n.accuracy is None:
        return "–"
    return f"{n.accuracy:.2f} ({'measured' if n.measured else 'published'})"
