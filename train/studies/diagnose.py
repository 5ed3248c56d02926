"""Why is this run slow? Input-bound, compute-bound or communication-bound, measured on this device and data.

  cnnbench diagnose --arch resnet-20 --dataset digits
  cnnbench diagnose --arch resnet50 --dataset imagenet --data-dir /data/imagenet --workers 8 --steps 60 --repeats 3

Takes the flags of a training run and measures, in one process, --repeats times each, alternating so that the
machine's drift hits all three alike:
  (a) the loader alone: the images/s its input pipeline delivers to this process, decoding and augmentation
      included, with no training beside it;
  (b) the training step alone: the model on synthetic batches already on the device (the arch's input size and
      batch), no input pipeline;
  (c) the real thing: the training step fed by the loader, with the engine's step-time breakdown.
Each as a median with its 95 % bootstrap interval (train/studies/stats.py: repeats, then the timing windows within
them). The verdict: compute-bound when (c) is not both significantly (its interval wholly below (b)'s) and
materially (under 90 % of it) slower than (b), and neither data wait nor exposed all-reduce takes half of (c)'s
step; otherwise input-bound or communication-bound, by which of the two takes more of (c)'s step. It prints a
paragraph, the likely causes among what it can see (loader workers against CPU cores, the decoder, pinned memory,
image size, the all-reduce share), what to try, each with the measured figure behind it, and logs the table
(diagnose.md, diagnose.json) and a bar plot of (a), (b), (c) (diagnose.png) as the artifacts of one MLflow run
tagged cnnbench.report = diagnose. One process: run the job itself under torchrun or horovodrun for its stragglers
and all-reduce (train/engine/stragglers.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from dataloaders import build_loaders
from train.context import DistContext
from train.engine.breakdown import PARTS, StepBreakdown
from train.engine.builders import Step, autocast, build_model, build_optimizer, synthetic_like_the_arch
from train.engine.config import TrainConfig, pos_int
from train.engine.distributed import SingleProcess, pick_device
from train.engine.launch import resolve_config, training_parser
from train.engine.loop import train_one_epoch
from train.engine.measure import synchronize, warmup_of
from train.engine.threads import process_threads
from train.engine.tracking import tracking_uri
from train.studies import stats
from train.studies.figures import significant
from train.studies.report import log_report
from train.studies.reports.common import markdown_table

KIND = "diagnose"
MATERIAL = 0.90  # (c) under this share of (b) is a material loss ...
SHARE = 0.20  # ... and a part of the step above this share is worth a suggestion of its own
HALF = 0.5  # data wait or exposed all-reduce taking this share of (c)'s step sets the pace
STAGES = ("loader", "step", "run")
PART_NAMES = ("step_time_ms", *(f"{part}_ms" for part in PARTS))
LABELS = {"loader": "(a) loader alone", "step": "(b) step on synthetic device batches", "run": "(c) real training"}


@dataclass(frozen=True)
class Figures:
    """What the verdict is drawn from: images/s of (a), (b), (c), and the mean parts of (c)'s step, in ms."""

    loader: stats.Interval
    step: stats.Interval
    run: stats.Interval
    parts: dict[str, float]  # step_time_ms and <part>_ms of train/engine/breakdown.py


@dataclass(frozen=True)
class Setting:
    """What diagnose can see of the configuration, for the causes."""

    device: str
    loader: str  # torch | dali
    dataset: str
    workers: int
    cores: int  # the cores this process may use
    image_size: int
    batch_size: int
    pinned: bool


def bound_by(f: Figures) -> str:
    """The rule: compute-bound unless (c) is significantly and materially slower than (b), or data wait or exposed
    all-reduce takes half of (c)'s step or more (measured within the same steps: no drift of the machine between
    passes can fake or hide it); then whichever of the two takes more of (c)'s step."""
    wait, comm = f.parts["data_wait_ms"], f.parts["allreduce_exposed_ms"]
    lost = f.run.high < f.step.low and f.run.estimate < MATERIAL * f.step.estimate
    if not lost and max(wait, comm) < HALF * f.parts["step_time_ms"]:
        return "compute-bound"
    return "communication-bound" if comm > wait else "input-bound"


def causes(f: Figures, s: Setting) -> list[str]:
    """The likely causes and what to try, each with the measured figure it rests on."""
    kind, step_ms = bound_by(f), f.parts["step_time_ms"]
    wait, comm = f.parts["data_wait_ms"], f.parts["allreduce_exposed_ms"]
    found = []
    if kind == "input-bound":
        if f.loader.estimate < f.step.estimate:
            found.append(f"the input pipeline alone delivers {significant(f.loader.estimate)} images/s, the step takes "
                         f"{significant(f.step.estimate)}: the loader cannot keep up even with nothing beside it")
        else:
            found.append(f"the loader alone delivers {significant(f.loader.estimate)} images/s, more than the step's "
                         f"{significant(f.step.estimate)}, but fed by it training reaches "
                         f"{significant(f.run.estimate)}: loading and training take turns on the same cores")
        if s.workers == 0:
            found.append(f"--workers 0 decodes in the training process: {wait:.0f} ms of each {step_ms:.0f} ms step "
                         f"waits for data ({100 * wait / step_ms:.0f} %); try --workers "
                         f"{max(1, min(4, s.cores - 1))} ({s.cores} cores here)")
        elif s.workers >= s.cores:
            found.append(f"--workers {s.workers} on {s.cores} cores: the workers and training compete for them, data "
                         f"wait {100 * wait / step_ms:.0f} % of the step; try --workers {max(1, s.cores - 1)}")
        else:
            found.append(f"--workers {s.workers} of {s.cores} cores: data wait {100 * wait / step_ms:.0f} % of the "
                         f"step; try --workers {s.cores - 1}")
        if s.loader == "torch" and s.dataset == "imagenet":
            found.append(f"JPEG decoding and RandomResizedCrop in PIL at {s.image_size} px deliver "
                         f"{significant(f.loader.estimate)} images/s: try --loader dali (benchmarks/loaders.py "
                         f"compares the two on this machine)")
        if s.device == "cuda" and not s.pinned:
            found.append("batches are copied from pageable memory: the DALI loader and --loader torch on CUDA pin them")
    elif kind == "communication-bound":
        found.append(f"all-reduce not hidden behind backward takes {comm:.0f} ms of each {step_ms:.0f} ms step "
                     f"({100 * comm / step_ms:.0f} %): try a larger --batch-size (fewer all-reduces per image), "
                     f"or fewer ranks per node")
    else:
        compute = f.parts["forward_ms"] + f.parts["backward_ms"] + f.parts["optimizer_ms"]
        found.append(f"the real run reaches {significant(f.run.estimate)} images/s, "
                     f"{100 * f.run.estimate / f.step.estimate:.0f} % of the {significant(f.step.estimate)} the step "
                     f"reaches on synthetic batches; forward, "
                     f"backward and optimizer take {compute:.0f} of its {step_ms:.0f} ms: the model and device set "
                     f"the pace. Try a cheaper step: --channels-last, --precision bf16, --compile or a larger "
                     f"--batch-size, each held against this one with `cnnbench compare`")
    if kind == "compute-bound" and wait > SHARE * step_ms:
        found.append(f"data wait is also {100 * wait / step_ms:.0f} % of the step ({wait:.0f} ms, --workers "
                     f"{s.workers} on {s.cores} cores; the loader alone delivers {significant(f.loader.estimate)} "
                     f"images/s)")
    if kind != "communication-bound" and comm > SHARE * step_ms:
        found.append(f"exposed all-reduce is also {100 * comm / step_ms:.0f} % of the step ({comm:.0f} ms)")
    return found


def paragraph(f: Figures, s: Setting) -> str:
    kind = bound_by(f)
    gap = (f"(c) {significant(f.run.estimate)} [{significant(f.run.low)}–{significant(f.run.high)}] images/s against "
           f"(b) {significant(f.step.estimate)} [{significant(f.step.low)}–{significant(f.step.high)}]")
    wait, comm = (100 * f.parts[name] / f.parts["step_time_ms"] for name in ("data_wait_ms", "allreduce_exposed_ms"))
    return (f"**{kind}**: {gap}; data wait {wait:.0f} % and exposed all-reduce {comm:.0f} % of (c)'s step (the rule: "
            f"compute-bound unless (c) is under {100 * MATERIAL:.0f} % of (b) with the intervals apart, or one of "
            f"the two takes {100 * HALF:.0f} % of the step). Likely, and what to try: " + "; ".join(causes(f, s)) + ".")


# ---- measuring ----

def main(argv: list[str] | None = None, prog: str = "cnnbench diagnose") -> int:
    parser = training_parser(prog, __doc__)
    parser.add_argument("--repeats", type=pos_int, default=3, help="passes of each of (a), (b), (c) (default: 3)")
    args = parser.parse_args(argv)
    cfg = synthetic_like_the_arch(resolve_config(args)[0])
    ctx = DistContext(device=pick_device(cfg.device), launcher="single")
    torch.set_num_threads(process_threads(cfg.threads, 1, ctx.device).count)
    figures, setting, passes = measure(cfg, ctx, args.repeats)
    markdown = render(cfg, figures, setting, passes)
    print(markdown, end="")
    uri = tracking_uri(cfg.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "diagnose.md").write_text(markdown)
        (Path(tmp) / "diagnose.json").write_text(json.dumps(_record(cfg, figures, setting, passes), indent=1))
        bar_plot(figures, Path(tmp) / "diagnose.png", f"{cfg.arch} {setting.dataset} b{setting.batch_size}")
        run_id = log_report(uri, cfg.experiment, KIND, [], Path(tmp))
    print(f"\nlogged as the artifacts (diagnose.md, diagnose.json, diagnose.png) of run {run_id} in experiment "
          f"{cfg.experiment}")
    return 0


def measure(cfg: TrainConfig, ctx: DistContext, repeats: int) -> tuple[Figures, Setting, dict]:
    """(a), (b), (c) ``repeats`` times each, alternating; per stage the images/s of each pass's timing windows."""
    dist = SingleProcess(ctx)
    loaders = build_loaders(cfg.data, ctx)
    spec = loaders.spec
    steps = min(len(loaders.train), cfg.data.steps or len(loaders.train))
    synthetic = synthetic_loader(cfg, spec, steps, ctx)
    model, _ = build_model(cfg, spec)
    model.to(ctx.device, memory_format=torch.channels_last if cfg.data.channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, cfg, 1, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    passes = {stage: [] for stage in STAGES}
    parts = []
    for repeat in range(repeats):
        loaders.train.set_epoch(repeat)
        passes["loader"].append([loader_rate(loaders.train, steps, cfg.warmup_steps, ctx.device)])
        passes["step"].append(_train(cfg, dist, model, optimizer, scaler, synthetic).window_rates)
        loaders.train.set_epoch(repeat)
        real = _train(cfg, dist, model, optimizer, scaler, loaders.train)
        passes["run"].append(real.window_rates)
        parts.append(real.metrics)
    mean_parts = {name: sum(m[name] for m in parts) / len(parts) for name in PART_NAMES}
    intervals = {stage: stats.median_interval(groups) for stage, groups in passes.items()}
    setting = Setting(ctx.device.type, cfg.data.loader, spec.name, cfg.data.workers, len(os.sched_getaffinity(0)),
                      spec.image_size, cfg.data.batch_size, cfg.data.loader == "torch" and ctx.device.type == "cuda")
    return Figures(**intervals, parts=mean_parts), setting, passes


def synthetic_loader(cfg: TrainConfig, spec, steps: int, ctx: DistContext):
    """Random batches made once on the device, of the real data's image size, classes and batch: ``steps`` of them."""
    data = dataclasses.replace(cfg.data, dataset="synthetic", image_size=spec.image_size, num_classes=spec.num_classes,
                               synthetic_train_size=steps * cfg.data.batch_size, steps=None)
    return build_loaders(synthetic_like_the_arch(dataclasses.replace(cfg, data=data)).data, ctx).train


def _train(cfg: TrainConfig, dist, model, optimizer, scaler, loader):
    """One epoch of the engine's training loop over ``loader``, breakdown on every steady step."""
    step = Step(model, optimizer, scaler, autocast(cfg.precision, dist.ctx.device),
                StepBreakdown(dist.ctx.device, 1, cfg.warmup_steps))
    return train_one_epoch(step, loader, cfg, dist, tqdm(disable=True))


def loader_rate(loader, steps: int, warmup_steps: int, device: torch.device,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Images/s of the first ``steps`` batches of ``loader`` with nothing else to do: the clock starts once its
    warm-up batches (worker start-up, the first reads) have arrived, and only the batches after them count."""
    warmup, batches = warmup_of(warmup_steps, steps), iter(loader)
    for _ in range(warmup):
        next(batches)
    synchronize(device)
    start, images = clock(), 0
    for _ in range(steps - warmup):
        images += len(next(batches)[1])
    synchronize(device)
    return images / (clock() - start)


# ---- output ----

def render(cfg: TrainConfig, f: Figures, s: Setting, passes: dict) -> str:
    rows = [[LABELS[stage], _cell(getattr(f, stage)), _count(passes[stage])] for stage in STAGES]
    parts = [[name, f"{f.parts[name]:.1f}", f"{100 * f.parts[name] / f.parts['step_time_ms']:.0f} %"]
             for name in PART_NAMES]
    seen = (f"{s.device}, {s.cores} cores for this process, --loader {s.loader} with --workers {s.workers}, "
            f"{s.dataset} at {s.image_size} px, batch {s.batch_size}, pinned memory {'yes' if s.pinned else 'no'}, "
            f"1 process (all-reduce: none here)")
    return "\n".join([
        f"# cnnbench diagnose: {cfg.arch} on {s.dataset}", "", paragraph(f, s), "",
        markdown_table(["what", "images/s: median [95 % CI]", "measured"], rows), "",
        "(c)'s step, mean of its sampled steps:", "",
        markdown_table(["part", "ms", "share of step_time_ms"], parts), "",
        f"Seen: {seen}. Load average {os.getloadavg()[0]:.1f} at the end (other work on the machine slows every "
        f"stage). Intervals: train/studies/stats.py over the passes, then each pass's timing windows.", ""])


def _cell(interval: stats.Interval) -> str:
    return f"{significant(interval.estimate)} [{significant(interval.low)}–{significant(interval.high)}]"


def _count(groups: list[list[float]]) -> str:
    windows = sum(map(len, groups))
    return f"{len(groups)} passes" + (f", {windows} windows" if windows > len(groups) else "")


def bar_plot(f: Figures, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [getattr(f, stage) for stage in STAGES]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([LABELS[s].replace(" on ", "\non ") for s in STAGES], [v.estimate for v in values],
           yerr=[[v.estimate - v.low for v in values], [v.high - v.estimate for v in values]], capsize=6,
           color=["#4c72b0", "#55a868", "#c44e52"])
    ax.set_ylabel("images/s (median, 95 % CI)")
    ax.set_title(f"{title}: {bound_by(f)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _record(cfg: TrainConfig, f: Figures, s: Setting, passes: dict) -> dict:
    return {"config": cfg.to_dict(), "verdict": bound_by(f), "causes": causes(f, s), "setting": vars(s),
            "images_per_sec": {stage: vars(getattr(f, stage)) for stage in STAGES}, "parts_ms": f.parts,
            "passes": passes}
