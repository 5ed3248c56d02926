"""Will it scale? The job's images/s at each world size, efficiency with its interval, and where the time went.

  cnnbench scaling --world-sizes 1 2 --repeats 3 -- --arch resnet-20 --dataset digits --epochs 2
  cnnbench scaling --launcher horovod --world-sizes 1 2 4 8 -- --arch resnet50 --dataset synthetic --steps 60

Runs the training job (every flag after ``--`` is the launcher's) at each world size, --repeats times, alternating
(1, 2, ..., 1, 2, ...) so that the machine's drift hits every size alike: under torchrun (launchers/ddp.py) or
horovodrun (launchers/horovod.py), on this node. Per world size N: the job's images/s (median over its runs of each
run's train_images_per_sec, with a 95 % interval, train/studies/stats.py), the efficiency rate(N) / (N x
rate(1)) with its interval (B / A of the runs at N against those at 1, divided by N), the step-time split (data
wait, compute = forward + backward, exposed all-reduce, optimizer; means of the runs' last epochs), and any
straggler the runs were tagged with (train/engine/stragglers.py). A plot (scaling.png) and a table (scaling.md,
scaling.json) are logged as the artifacts of one run tagged cnnbench.report = scaling; the jobs' own runs are in the
same experiment, tagged cnnbench.scaling = the study's id.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from train.engine.config import DEFAULTS, OneLineErrorParser, pos_int
from train.engine.schema import TRAIN_IMAGES_PER_SEC
from train.engine.stragglers import TAG as STRAGGLER_TAG
from train.engine.tracking import open_store, tracking_uri
from train.errors import UsageError
from train.studies import stats
from train.studies.figures import significant
from train.studies.helptext import LaidOutHelp
from train.studies.report import log_report
from train.studies.reports.common import markdown_table

KIND = "scaling"
STUDY_TAG = "cnnbench.scaling"
LAUNCHERS = Path(__file__).resolve().parents[2] / "launchers"
SPLIT = {"data wait": ("data_wait_ms",), "compute": ("forward_ms", "backward_ms"),
         "exposed all-reduce": ("allreduce_exposed_ms",), "optimizer": ("optimizer_ms",)}


def main(argv: list[str] | None = None, prog: str = "cnnbench scaling") -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, job = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = _parser(prog).parse_args(own)
    if 1 not in args.world_sizes:
        raise UsageError("--world-sizes must include 1: efficiency is rate(N) / (N x rate(1))")
    study, uri = uuid.uuid4().hex[:12], tracking_uri(args.tracking_uri)
    for repeat in range(args.repeats):
        for size in args.world_sizes:
            print(f"scaling: repeat {repeat + 1}/{args.repeats}, {size} process{'es' * (size > 1)}", file=sys.stderr)
            run_job(args.launcher, size, [*job, "--tracking-uri", uri, "--experiment", args.experiment,
                                          "--tag", f"{STUDY_TAG}={study}", "--no-system-metrics"])
    runs = _study_runs(uri, args.experiment, study)
    points = {size: point_figures(runs[size], size, runs[1]) for size in args.world_sizes}
    markdown = render(args, points)
    print(markdown, end="")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "scaling.md").write_text(markdown)
        (Path(tmp) / "scaling.json").write_text(json.dumps({"launcher": args.launcher, "job": job, "points": {
            size: {**{k: vars(v) for k, v in p.items() if isinstance(v, stats.Interval)},
                   **{k: v for k, v in p.items() if not isinstance(v, stats.Interval)}}
            for size, p in points.items()}}, indent=1, default=str))
        plot(points, Path(tmp) / "scaling.png", f"{args.launcher}: {' '.join(job)}")
        run_id = log_report(uri, args.experiment, KIND, [run for jobs in runs.values() for run, _ in jobs], Path(tmp))
    print(f"\nlogged as the artifacts (scaling.md, scaling.json, scaling.png) of run {run_id} in experiment "
          f"{args.experiment}")
    return 0


def _parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=prog, description=__doc__, formatter_class=LaidOutHelp)
    p.add_argument("--world-sizes", type=pos_int, nargs="+", default=[1, 2], metavar="N",
                   help="processes per job, 1 among them (default: 1 2)")
    p.add_argument("--repeats", type=pos_int, default=3, help="jobs per world size (default: 3)")
    p.add_argument("--launcher", choices=("ddp", "horovod"), default="ddp",
                   help="torchrun + launchers/ddp.py, or horovodrun + launchers/horovod.py (default: ddp)")
    p.add_argument("--experiment", default=DEFAULTS.experiment,
                   help=f"experiment of the jobs and the study's run (default: {DEFAULTS.experiment})")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    return p


def run_job(launcher: str, size: int, flags: list[str]) -> None:
    """One training job of ``size`` processes on this node; a failed job stops the study with its last line."""
    if launcher == "ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={size}",
               str(LAUNCHERS / "ddp.py"), *flags]
    else:
        cmd = [str(Path(sys.executable).with_name("horovodrun")), "--gloo", "-np", str(size), "-H",
               f"localhost:{size}", sys.executable, str(LAUNCHERS / "horovod.py"), *flags]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"the {size}-process job failed (exit {done.returncode}): {last}")


def _study_runs(uri: str, experiment: str, study: str) -> dict[int, list[tuple]]:
    """The study's jobs per world size: (run, [its images/s]), one value a run as compare takes it."""
    client = open_store(uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                               f"tags.`{STUDY_TAG}` = '{study}'")
    by_size: dict[int, list[tuple]] = {}
    for run in found:
        rate = run.data.metrics[TRAIN_IMAGES_PER_SEC]
        by_size.setdefault(int(run.data.params["world_size"]), []).append((run, [rate]))
    return by_size


def point_figures(jobs: list[tuple], size: int, single: list[tuple]) -> dict:
    """One world size: images/s and efficiency with their intervals, the step-time split, stragglers."""
    _, rate, ratio = stats.ratio_interval([windows for _, windows in single], [windows for _, windows in jobs])
    efficiency = stats.Interval(ratio.estimate / size, ratio.low / size, ratio.high / size)
    runs = [run for run, _ in jobs]
    split = {part: _mean(runs, names) for part, names in SPLIT.items()}
    return {"images/s": rate, "efficiency": efficiency, "step_time_ms": _mean(runs, ("step_time_ms",)), **split,
            "runs": len(runs), "stragglers": [r.data.tags[STRAGGLER_TAG] for r in runs if STRAGGLER_TAG in r.data.tags]}


def _mean(runs: list, names: tuple[str, ...]) -> float:
    return sum(sum(r.data.metrics.get(n, math.nan) for n in names) for r in runs) / len(runs)


def render(args, points: dict) -> str:
    rows = [[size, p["runs"], _cell(p["images/s"]), _cell(p["efficiency"], "{:.2f}"), f"{p['step_time_ms']:.0f}",
             *(f"{p[part]:.0f} ({100 * p[part] / p['step_time_ms']:.0f} %)" for part in SPLIT),
             "; ".join(p["stragglers"]) or "none"] for size, p in points.items()]
    table = markdown_table(["processes", "runs", "images/s [95 % CI]", "efficiency [95 % CI]", "step ms",
                            *(f"{part} ms" for part in SPLIT), "stragglers"], rows)
    return "\n".join([f"# cnnbench scaling ({args.launcher}, {args.repeats} jobs per size, alternating)", "", table, "",
                      "efficiency = rate(N) / (N x rate(1)); intervals: train/studies/stats.py (one images/s "
                      "per run); the split: means of each run's last epoch, per rank.", ""])


def _cell(interval: stats.Interval, fmt: str | None = None) -> str:
    show = fmt.format if fmt else significant
    return f"{show(interval.estimate)} [{show(interval.low)}–{show(interval.high)}]"


def plot(points: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(points)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in ((left, "images/s", "images/s (job)"), (right, "efficiency", "efficiency")):
        values = [points[n][key] for n in sizes]
        ax.errorbar(sizes, [v.estimate for v in values], capsize=5, marker="o",
                    yerr=[[v.estimate - v.low for v in values], [v.high - v.estimate for v in values]])
        ax.set_xlabel("processes")
        ax.set_ylabel(f"{label}, median and 95 % CI")
        ax.set_xticks(sizes)
    right.axhline(1.0, color="grey", linestyle=":")
    fig.suptitle(title[:100], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
