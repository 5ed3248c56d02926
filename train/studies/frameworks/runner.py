"""Runs one task on one framework engine and logs it with the training engine's schema and tracker.

The runner, not the engine, owns everything that must be the same for every framework: the data (read and
normalised by ``dataloaders``), the batch order, the clock (``train.engine.measure.EpochTimer``: steady-state
images / wall seconds, warm-up steps excluded, windows for median and spread, each window logged), the
evaluation arithmetic and the MLflow record. A combination an engine cannot run here ends as an ``unsupported``
result: the run closes FINISHED with param ``outcome=unsupported`` and the reason in its ``cnnbench.end`` tag.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dataloaders import DataConfig
from dataloaders.normalization import MEAN_STD
from dataloaders.synthetic import POOL_BATCHES
from train.engine.config import DEFAULTS
from train.engine.environment import environment_params
from train.engine.measure import EpochTimer, EpochTiming, images_per_sec, steady_rates, window_series
from train.engine.schema import TRAIN_IMAGES_PER_SEC, VAL_ERROR
from train.engine.tracking import MlflowTracker, tracking_uri
from train.errors import UsageError
from train.studies.frameworks.contract import Arrays, Engine, ModelInfo, TaskOptions, Unsupported
from train.studies.frameworks.tasks import LR, MOMENTUM, NATIVE_DATA_FORMAT, TASKS, Task

log = logging.getLogger("cnnbench")

ENGINES = {
    "pytorch": ("train.studies.frameworks.torch_engine", "TorchEngine"),
    "tensorflow": ("train.studies.frameworks.keras_engine", "KerasEngine"),
    "mxnet": ("train.studies.frameworks.mxnet_engine", "MxnetEngine"),
}
FRAMEWORKS = tuple(ENGINES)
TRACKING_FLAGS = ("tracking_uri", "experiment", "run_name")
# Every engine's steps end on the device before they return (see contract), so the timer's own
# synchronisation has nothing left to wait for: it runs on the host clock.
HOST = torch.device("cpu")


@dataclass
class FrameworkRun:
    run_id: str
    outcome: str  # "measured" | "unsupported"
    reason: str
    metrics: dict
    tracking_uri: str


def make_options(framework: str, task: str, **given) -> TaskOptions:
    """The task's defaults, overridden by ``given``; a flag that means nothing for the task is an error."""
    spec = TASKS[task]
    misplaced = sorted(set(given) - set(spec.flags) - set(TRACKING_FLAGS))
    if misplaced:
        flags = ", ".join("--" + name.replace("_", "-") for name in misplaced)
        raise UsageError(f"{flags} does not apply to --task {task}")
    defaults = dict(batch_size=spec.batch_size, epochs=spec.epochs, steps=spec.steps, lr=LR, momentum=MOMENTUM,
                    image_size=spec.image_size, num_classes=spec.num_classes,
                    data_format=NATIVE_DATA_FORMAT[framework], precision="fp32", seed=DEFAULTS.data.seed,
                    warmup_steps=DEFAULTS.warmup_steps, window_steps=DEFAULTS.window_steps)
    return TaskOptions(framework=framework, task=task, **{**defaults, **given})


def run(opts: TaskOptions) -> FrameworkRun:
    task = TASKS[opts.task]
    data = load_arrays(task, opts)  # before the engine starts: a wrong --data-dir fails in a second
    engine = make_engine(opts.framework, opts.threads)
    uri = tracking_uri(opts.tracking_uri)
    tracker = MlflowTracker(uri, opts.experiment)
    run_name = opts.run_name or f"{opts.framework}-{opts.task}-{opts.data_format}-b{opts.batch_size}"
    metrics = {}
    with contextlib.closing(engine), tracker.run(run_name, run_params(task, opts, engine, data),
                                                 opts.to_dict()) as end:
        try:
            info = engine.build(opts, data)
            tracker.log_params(model_params(info))
            tracker.log_metrics({"num_params": info.num_params}, step=0)
            measure = train if task.training else infer
            metrics = {"num_params": info.num_params, **measure(engine, task, data, opts, tracker)}
            outcome, end.reason = "measured", f"measured {opts.task} on {opts.framework}"
        except Unsupported as why:
            outcome, end.reason = "unsupported", f"unsupported on {engine.device.upper()}: {why}"
            log.info("%s %s: %s", opts.framework, opts.task, end.reason)
        tracker.log_params({"outcome": outcome})
    return FrameworkRun(tracker.run_id, outcome, end.reason, metrics, uri)


def make_engine(framework: str, threads: int | None = None) -> Engine:
    module, name = ENGINES[framework]
    return getattr(importlib.import_module(module), name)(threads)


def load_arrays(task: Task, opts: TaskOptions) -> Arrays:
    """Synthetic: a pool of POOL_BATCHES batches of standard-normal images, as the training engine's synthetic
    loader keeps. CIFAR: the training engine's reader and constants, without augmentation (as in the study)."""
    if task.synthetic:
        rng = np.random.default_rng(opts.seed)
        size = POOL_BATCHES * opts.batch_size
        images = rng.standard_normal((size, 3, opts.image_size, opts.image_size), dtype=np.float32)
        return Arrays(images, rng.integers(0, opts.num_classes, size))
    from dataloaders.cifar import FILES, find_folder, read_split  # torchvision: imported only for CIFAR

    files = FILES[task.dataset]
    folder = find_folder(DataConfig(dataset=task.dataset, data_dir=opts.data_dir), files)
    (x_train, y_train), (x_val, y_val) = (read_split(folder, names, files) for names in (files.train, files.val))
    if opts.batch_size > len(y_train):
        raise UsageError(f"--batch-size {opts.batch_size} is larger than the {len(y_train)} training images")
    mean_std = MEAN_STD[task.dataset]
    return Arrays(normalised(x_train, mean_std), y_train.numpy(), normalised(x_val, mean_std), y_val.numpy())


def normalised(images: torch.Tensor, mean_std) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (x / 255 - mean) / std, the engine's to_normalized_float in numpy."""
    mean, std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in mean_std)
    return (images.numpy().astype(np.float32) / 255 - mean) / std


def train(engine: Engine, task: Task, data: Arrays, opts: TaskOptions, tracker) -> dict:
    rng = np.random.default_rng(opts.seed)
    started, fit_seconds, best = time.perf_counter(), 0.0, float("inf")
    windows, steady_images, steady_seconds = 0, 0, 0.0  # train_images_per_sec: the steady state of every epoch
    for epoch in range(1, opts.epochs + 1):
        timing = timed(engine.train_step, train_batches(task, data, opts, rng), opts)
        loss, accuracy = engine.end_train_epoch()
        metrics = {"train_loss": loss, "train_top1_err": 100 * (1 - accuracy), "epoch_time_s": timing.epoch_seconds,
                   "epoch_images_per_sec": timing.images_per_sec, "epoch_images_per_sec_spread": timing.spread_pct}
        fit_seconds += timing.epoch_seconds
        if data.y_val is not None:
            metrics.update(evaluate(engine, data, opts))
            best = min(best, metrics["val_top1_err"])
        rates = steady_rates(timing.windows)
        tracker.log_metrics(metrics, step=epoch, series=window_series(windows, rates))
        windows += len(rates)
        steady_images, steady_seconds = steady_images + timing.images, steady_seconds + timing.seconds
        log.info("%s %s epoch %d/%d: train loss %.4f, %.1f img/s%s", opts.framework, opts.task, epoch, opts.epochs,
                 loss, metrics["epoch_images_per_sec"],
                 f", val top-1 error {metrics['val_top1_err']:.2f} %" if "val_top1_err" in metrics else "")
    run_metrics = {"train_time_s": time.perf_counter() - started, "fit_time_s": fit_seconds,
                   TRAIN_IMAGES_PER_SEC: images_per_sec(steady_images, steady_seconds)}
    if data.y_val is not None:
        run_metrics.update({"best_val_top1_err": best, VAL_ERROR: metrics["val_top1_err"],
                            "final_val_top5_err": metrics["val_top5_err"]})
    tracker.log_metrics(run_metrics, step=0)
    return {**metrics, **run_metrics}


def infer(engine: Engine, task: Task, data: Arrays, opts: TaskOptions, tracker) -> dict:
    metrics = throughput("infer", timed(engine.infer_step, pool_batches(opts), opts))
    tracker.log_metrics(metrics, step=0)
    log.info("%s %s: %.1f img/s", opts.framework, opts.task, metrics["infer_images_per_sec"])
    return metrics


def train_batches(task: Task, data: Arrays, opts: TaskOptions, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled epoch of complete batches (the study drops the incomplete one), or the synthetic pool's."""
    if task.synthetic:
        return pool_batches(opts)
    order = rng.permutation(len(data.y_train))
    return [order[i:i + opts.batch_size] for i in range(0, len(order) - opts.batch_size + 1, opts.batch_size)]


def pool_batches(opts: TaskOptions) -> list[np.ndarray]:
    b = opts.batch_size
    return [np.arange(slot * b, (slot + 1) * b) for slot in (step % POOL_BATCHES for step in range(opts.steps))]


def timed(step, batches: list[np.ndarray], opts: TaskOptions) -> EpochTiming:
    timer = EpochTimer(HOST, opts.warmup_steps, opts.window_steps)
    for _, indices in timer.iterate(enumerate(batches), len(batches)):
        step(indices)
    return timer.timing


def throughput(prefix: str, timing: EpochTiming) -> dict:
    return {f"{prefix}_images_per_sec": timing.images_per_sec,
            f"{prefix}_images_per_sec_median": timing.median_images_per_sec,
            f"{prefix}_images_per_sec_spread": timing.spread_pct}


def evaluate(engine: Engine, data: Arrays, opts: TaskOptions) -> dict:
    """Loss and top-1/top-5 error over every validation image, from the engine's logits."""
    started = time.perf_counter()
    n, b = len(data.y_val), opts.batch_size
    logits = torch.from_numpy(np.concatenate([engine.predict_val(np.arange(i, min(i + b, n)))
                                              for i in range(0, n, b)]))
    labels = torch.from_numpy(data.y_val)
    hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
    return {"val_loss": F.cross_entropy(logits, labels).item(),
            "val_top1_err": 100 * (1 - hits[:, 0].double().mean().item()),
            "val_top5_err": 100 * (1 - hits.any(1).double().mean().item()),
            "eval_time_s": time.perf_counter() - started}


def run_params(task: Task, opts: TaskOptions, engine: Engine, data: Arrays) -> dict:
    images_per_epoch = opts.steps * opts.batch_size if task.synthetic else len(data.y_train)
    params = {
        "framework": opts.framework, "framework_version": engine.framework_version, "task": task.name,
        "arch": task.arch, "dataset": task.dataset, "image_size": opts.image_size, "train_size": images_per_epoch,
        "batch_size": opts.batch_size, "global_batch_size": opts.batch_size, "world_size": 1, "launcher": "single",
        "data_format": opts.data_format, "precision": opts.precision, "seed": opts.seed,
        "warmup_steps": opts.warmup_steps, "window_steps": opts.window_steps,
        **environment_params(torch.device(engine.device)), "num_threads": engine.threads,
    }
    if task.training:
        params.update(epochs=opts.epochs, lr=opts.lr, momentum=opts.momentum, num_classes=opts.num_classes)
    if task.synthetic:
        params["steps"] = opts.steps
    if data.y_val is not None:
        params.update(val_size=len(data.y_val), val_batch_size=opts.batch_size)
    return params


def model_params(info: ModelInfo) -> dict:
    return {"arch_resolved": info.arch_resolved, "model_variant": info.model_variant,
            "graph_compile": info.graph_compile}
