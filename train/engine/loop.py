"""The one training engine: every launcher builds a ``Distributed`` seam and calls ``run``.

Reads top to bottom: ``run`` sets up data, model, optimiser, tracking and resumption, then ``_train_epochs`` loops
over ``train_one_epoch``, ``evaluate``, checkpoint and log. Rank-dependent behaviour (tracking, checkpoints,
progress bars, logs) is decided once in ``run``; the loop itself never asks which rank it is on.

Whatever happens to a job, its figures are the job's: the schedule follows the settings a run is resumed with
(``builders.build_scheduler``); run-level figures (``train_time_s``, ``peak_mem_mib``, time to target) carry over
in the checkpoint from one segment of a stopped, resumed or restarted run to the next; validation scores the model
rank 0 checkpoints (its BatchNorm statistics on every rank); throughput, its windows and fp16's skipped steps are
the job's, not rank 0's times the world size.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dataloaders import DatasetSpec, build_loaders
from train.engine.batch_search import fit_batch_size
from train.engine.breakdown import StepBreakdown
from train.engine.builders import (
    AMP_DTYPES,
    Step,
    autocast,
    build_model,
    build_optimizer,
    build_scheduler,
    maybe_compile,
    scaled_lr,
    sgd_impl,
    synthetic_like_the_arch,
)
from train.engine.checkpoint import remember_job_run, save_checkpoint
from train.engine.config import TrainConfig
from train.engine.distributed import gather_hostnames, gather_per_rank
from train.engine.environment import environment_params, mlflow_source_tags
from train.engine.measure import (
    EpochTimer,
    EpochTiming,
    Window,
    format_pct,
    full_batch_steps,
    job_windows,
    median_and_spread,
    peak_memory_mib,
    reset_peak_memory,
    steady_rates,
    window_series,
)
from train.engine.mfu import job_peak, mfu_pct
from train.engine.schema import PARAM_NAMES, at_rank
from train.engine.signals import raise_if_terminated
from train.engine.stragglers import TAG as STRAGGLER_TAG
from train.engine.stragglers import describe, find_stragglers
from train.engine.threads import Threads, process_threads
from train.engine.tracking import make_tracker, record_system_metrics, system_metrics_on, tracking_uri
from train.errors import RankError, RunFault, UsageError
from train.models import count_parameters, forward_flops_per_image

log = logging.getLogger("cnnbench")

TARGET_TAG = "cnnbench.target"
RESUME_TAG = "cnnbench.resumed.epoch-{epoch}"


@dataclass
class TrainState:
    """What a checkpoint restores besides model, optimiser and loss scaler: where the run is, and the run-level
    figures so far, which a resumed or restarted run goes on counting."""

    epoch: int = 0  # epochs completed
    best_val_top1_err: float = math.inf
    run_id: str | None = None
    train_seconds: float = 0.0  # epoch_time_s summed over the run's epochs
    eval_seconds: float = 0.0  # eval_time_s summed likewise
    images: int = 0  # training images processed, all ranks
    peak_mem_mib: float = 0.0  # the most any rank held in any epoch so far
    target: dict | None = None  # the time-to-target metrics, from the epoch that reached --target-top1-err


@dataclass
class Training:
    """What trains, built once per job."""

    model: nn.Module  # unwrapped: what rank 0 checkpoints
    eval_model: nn.Module  # the same model (compiled if asked): evaluation bypasses DDP, ranks' batch counts differ
    step: Step  # the wrapped model, the optimizer that steps (under Horovod its own object) and the loss scaler
    scheduler: torch.optim.lr_scheduler.LRScheduler
    state: TrainState


@dataclass
class EpochResult:
    metrics: dict  # the epoch's logged metrics
    window_rates: list[float]  # the job's full timing windows, images/s
    images: int  # training images processed, all ranks
    straggler: str | None = None  # the ranks train/engine/stragglers.py names, in words


@dataclass
class RunSummary:
    run_id: str | None
    status: str
    tracking_uri: str
    metrics: dict  # run metrics and the last epoch's metrics
    checkpoint: Path | None


def run(cfg: TrainConfig, dist, checkpoint: dict | None = None, run_id: str | None = None) -> RunSummary:
    """Train ``cfg`` on the process set of ``dist``; ``checkpoint`` is a loaded payload to resume; ``run_id``
    reopens that MLflow run from epoch 1 (a torchrun job restarted before its first checkpoint)."""
    ctx = dist.ctx
    uri = tracking_uri(cfg.tracking_uri)
    saved = _saved_state(checkpoint) if checkpoint else None
    run_id = saved.run_id if saved else run_id
    # a torchrun job notes its run as soon as it exists: restarted workers reopen it, whenever they were killed
    note_job_run = partial(remember_job_run, Path(cfg.checkpoint_dir), ctx.job_id) if ctx.job_id else None
    tracker = make_tracker(ctx.is_main, uri, cfg.experiment, run_id, cfg.tracking_grace_s, note_job_run)
    # rank 0 alone talks to the tracking store and writes checkpoints
    _check_before_work(dist, lambda: tracker.probe() or _unwritable(cfg.checkpoint_dir) if ctx.is_main else None)
    threads = _configure_torch(cfg, ctx)
    cfg, batch_search = fit_batch_size(synthetic_like_the_arch(cfg), dist)
    peak = job_peak(dist, AMP_DTYPES[cfg.precision] or torch.float32, cfg.peak_tflops, cfg.peak_cache)
    torch.manual_seed(cfg.data.seed)
    loaders = build_loaders(cfg.data, ctx)
    spec = loaders.spec
    model, arch_resolved = build_model(cfg, spec)
    complexity = {"num_params": count_parameters(model), "flops_per_image": _flops(model, cfg, spec)}
    model.to(ctx.device, memory_format=torch.channels_last if cfg.data.channels_last else torch.preserve_format)
    _check_before_work(dist, lambda: _short_of_disk(cfg.checkpoint_dir, model) if ctx.is_main else None)
    training = _prepare(cfg, dist, model, checkpoint, saved or TrainState())

    run_name = cfg.run_name or _default_run_name(cfg, ctx, spec)
    system_metrics = system_metrics_on(cfg.system_metrics, ctx.world_size)
    params = {**_run_params(cfg, ctx, spec, arch_resolved), "sgd_impl": sgd_impl(cfg, ctx.device),
              "batch_size_search": batch_search, "peak_tflops": peak.tflops, "peak_tflops_source": peak.source,
              "system_metrics": system_metrics, "num_threads_source": threads.source}
    tags = {**mlflow_source_tags(), **cfg.run_tags, **(_resume_tags(checkpoint, saved.epoch, cfg) if saved else {})}
    state = training.state
    # however it ends, the run is closed with a status
    with tracker.run(run_name, params, cfg.to_dict(), tags) as end, \
            record_system_metrics(dist, tracker.run_id, uri, system_metrics, resumed=run_id is not None):
        state.run_id = tracker.run_id
        ckpt_dir = Path(cfg.checkpoint_dir) / str(state.run_id)
        save = partial(save_checkpoint, ckpt_dir) if ctx.is_main else (lambda epoch, payload: None)
        tracker.keep_undelivered_in(ckpt_dir)
        if checkpoint is None:
            tracker.log_metrics(complexity, step=0)
            tracker.log_dataset(spec)
        else:  # a job killed between its last checkpoint and that epoch's metrics must not lose them
            tracker.ensure_logged(checkpoint.get("epoch_metrics", {}), step=saved.epoch,
                                  series=checkpoint.get("epoch_series"))
        log.info("%s (%s): %.2f M params, %.1f MFLOPs/image; %s: %d train / %d val images; run %s",
                 cfg.arch, arch_resolved, complexity["num_params"] / 1e6, complexity["flops_per_image"] / 1e6,
                 spec.name, spec.train_size, spec.val_size, state.run_id)
        epoch_figures = partial(_epoch, cfg=cfg, dist=dist, t=training, loaders=loaders, peak_tflops=peak.tflops,
                                flops=complexity["flops_per_image"])
        reset_peak_memory(ctx.device)  # start-up probes (batch search, peak FLOP/s) are no part of the run
        metrics, last_ckpt = _train_epochs(cfg, training, epoch_figures, tracker, save, end, ckpt_dir)
        run_metrics = _run_metrics(metrics, state)
        tracker.log_metrics(run_metrics, step=0)
        if cfg.target_top1_err is not None and state.target is None:  # reached: tagged at that epoch
            tracker.set_tags({TARGET_TAG: _target_sentence(cfg, state)})
    return RunSummary(state.run_id, end.outcome(), uri, {**complexity, **metrics, **run_metrics}, last_ckpt)


def _prepare(cfg: TrainConfig, dist, model: nn.Module, checkpoint: dict | None, state: TrainState) -> Training:
    """Optimiser, loss scaler and schedule, restored from ``checkpoint`` (at ``state``) when resuming, and the step
    that trains."""
    ctx = dist.ctx
    # the optimizer that steps is the one whose state is checkpointed: Horovod's wrapper is a new object with
    # its own momentum buffers
    optimizer = dist.wrap_optimizer(build_optimizer(model, cfg, ctx.world_size, ctx.device))
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    if scaler.is_enabled() and ctx.device.type == "cuda" and sgd_impl(cfg, ctx.device) != "fused":
        log.warning("fp16 with --sgd-impl %s: torch's loss scaler reads its inf check on the host before every "
                    "update, a device synchronisation per step; fused SGD (the default on CUDA) skips on the "
                    "device", sgd_impl(cfg, ctx.device))
    if checkpoint:
        _restore(checkpoint, model, optimizer, scaler)
    if state.epoch >= cfg.epochs:
        raise UsageError(f"the checkpoint is at epoch {state.epoch} of {cfg.epochs}: nothing left to train "
                         f"(give a larger --epochs to train further)")
    scheduler = build_scheduler(optimizer, cfg, ctx.world_size, epochs_done=state.epoch)
    dist.broadcast_state(model, optimizer)

    wrapped = dist.wrap_model(model)  # DDP wraps before compiling, so compile sees its bucketing
    eval_model = maybe_compile(model, cfg)
    train_model = eval_model if wrapped is model else maybe_compile(wrapped, cfg)
    step = Step(train_model, optimizer, scaler, autocast(cfg.precision, ctx.device),
                StepBreakdown(ctx.device, cfg.breakdown_every, cfg.warmup_steps, wrapped))
    return Training(model, eval_model, step, scheduler, state)


def _train_epochs(cfg: TrainConfig, t: Training, epoch_figures: Callable[[int], EpochResult], tracker, save,
                  end, ckpt_dir: Path) -> tuple[dict, Path | None]:
    """The remaining epochs of the schedule; every epoch checkpointed, then logged. Stops early at --stop-after,
    or at the target with --stop-at-target."""
    state, metrics, last_ckpt = t.state, {}, None
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        result = epoch_figures(epoch)
        metrics = result.metrics
        _count(state, epoch, result)
        reached = _reaches_target(cfg, state, metrics["val_top1_err"], epoch)
        series = window_series(epoch, result.window_rates)
        # checkpoint first: a job killed in between re-logs this epoch from the checkpoint when it resumes,
        # while metrics logged first would be logged twice by the epoch's rerun
        last_ckpt = save(epoch, _payload(cfg, t, metrics, series))
        tracker.log_metrics(metrics, step=epoch, series=series)
        _log_epoch(epoch, cfg.epochs, metrics)
        if result.straggler:
            tracker.set_tags({STRAGGLER_TAG: result.straggler})
        if reached:
            tracker.log_metrics(state.target, step=0)
            tracker.set_tags({TARGET_TAG: _target_sentence(cfg, state)})
        if reached and cfg.stop_at_target:
            end.reason = f"reached the target at epoch {epoch} of {cfg.epochs} (--stop-at-target)"
            break
        if epoch == cfg.stop_after:
            end.status = "KILLED"
            end.reason = (f"stopped after epoch {epoch} of {cfg.epochs} (--stop-after); "
                          f"continue with --resume {ckpt_dir}")
            break
    return metrics, last_ckpt


def _epoch(epoch: int, cfg: TrainConfig, dist, t: Training, loaders, peak_tflops: float, flops: int) -> EpochResult:
    """Train one epoch and evaluate the model rank 0 checkpoints; the figures are the job's."""
    _seed_epoch(cfg.data.seed, epoch, dist.ctx.rank)
    loaders.train.set_epoch(epoch)
    lr = t.step.optimizer.param_groups[0]["lr"]
    try:
        result = train_one_epoch(t.step, loaders.train, cfg, dist, _progress(dist.ctx, epoch, cfg.epochs))
    except RunFault as fault:
        raise RunFault(f"epoch {epoch}: {fault}") from None
    dist.broadcast_buffers(t.model)
    val = evaluate(t.eval_model, loaders.val, t.step.autocast, dist, loaders.spec)
    t.scheduler.step()
    t.state.peak_mem_mib = max(t.state.peak_mem_mib, *(row[0] for row in gather_per_rank(
        dist, [peak_memory_mib(dist.ctx.device)])))
    result.metrics.update(val, lr=lr, mfu_pct=mfu_pct(flops, result.metrics["train_images_per_sec"], peak_tflops,
                                                      dist.ctx.world_size))
    result.straggler = _stragglers(dist, result.metrics, result.window_rates, epoch)
    return result


def _stragglers(dist, metrics: dict, window_rates: list[float], epoch: int) -> str | None:
    """The ranks of the epoch that are stragglers, with their hosts; every rank decides alike from the same figures."""
    if dist.ctx.world_size < 2:
        return None
    busy = [metrics[at_rank("busy_ms", rank)] for rank in range(dist.ctx.world_size)]
    found = find_stragglers(busy, window_rates)
    return describe(found, gather_hostnames(dist), epoch) if found else None


def _count(state: TrainState, epoch: int, result: EpochResult) -> None:
    m = result.metrics
    state.epoch = epoch
    state.best_val_top1_err = min(state.best_val_top1_err, m["val_top1_err"])
    state.train_seconds += m["epoch_time_s"]
    state.eval_seconds += m["eval_time_s"]
    state.images += result.images


def _reaches_target(cfg: TrainConfig, state: TrainState, val_top1_err: float, epoch: int) -> bool:
    """True at the first epoch whose error is at or below --target-top1-err; its figures go to ``state.target``."""
    if cfg.target_top1_err is None or state.target is not None or val_top1_err > cfg.target_top1_err:
        return False
    state.target = {"time_to_target_s": state.train_seconds, "eval_time_to_target_s": state.eval_seconds,
                    "epochs_to_target": epoch, "images_to_target": state.images}
    return True


def _target_sentence(cfg: TrainConfig, state: TrainState) -> str:
    target = f"{cfg.target_top1_err:g} %"
    if state.target is not None:
        return (f"reached at epoch {state.target['epochs_to_target']} after "
                f"{state.target['time_to_target_s']:.1f} s of training: top-1 error <= {target}")
    return f"not reached in {state.epoch} epochs: best top-1 error {state.best_val_top1_err:.2f} % > {target}"


def _check_before_work(dist, find_problem: Callable[[], str | None]) -> None:
    """A problem one rank finds stops every rank at once (that rank prints it), before the work it would spoil."""
    problem = find_problem()
    flag = torch.tensor([float(problem is not None)], device=dist.ctx.device)
    if dist.all_reduce_sum(flag).item():
        raise (RankError if problem else UsageError)(problem or "another rank found a problem at start-up")


def _unwritable(folder: str) -> str | None:
    """Why checkpoints cannot be written under ``folder``, found by writing a file there."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cnnbench-write-test"):
            return None
    except OSError as err:
        return f"--checkpoint-dir {folder} is not writable: {err.strerror or err}"


def _short_of_disk(folder: str, model: nn.Module) -> str | None:
    """A checkpoint holds the weights and about as much optimizer state; two are kept while a third is written."""
    need = 3 * 2 * sum(t.numel() * t.element_size() for t in model.state_dict().values())
    free = shutil.disk_usage(folder).free
    if free < need:
        return (f"--checkpoint-dir {folder} has {free / 2**20:.0f} MiB free; checkpoints of this model need about "
                f"{need / 2**20:.0f} MiB")
    return None


def train_one_epoch(step: Step, loader, cfg: TrainConfig, dist, progress: tqdm) -> EpochResult:
    """One pass over this rank's training shard; sums are reduced over ranks, then divided."""
    step.model.train()
    sums = torch.zeros(2, dtype=torch.float64, device=dist.ctx.device)  # loss sum, top-1 correct
    seen = 0
    timer = EpochTimer(dist.ctx.device, cfg.warmup_steps, cfg.window_steps,
                       on_window=lambda rate: progress.set_postfix_str(f"{rate:.0f} img/s", refresh=False))
    faults = NonFiniteWatch(dist.ctx.device, step.scaler)
    steps = min(len(loader), cfg.data.steps or len(loader))
    timed = full_batch_steps(min(loader.num_samples, steps * cfg.data.batch_size), cfg.data.batch_size)
    with progress:
        sampled = step.breakdown.iterate(loader, steps, timed)
        for i, (images, labels) in enumerate(timer.iterate(sampled, steps, timed)):
            raise_if_terminated()
            loss, logits = step(images, labels)
            faults.observe(loss, i)
            sums += torch.stack([loss * len(labels), (logits.argmax(1) == labels).sum()])
            seen += len(labels)
            progress.update()
    faults.raise_if_any(dist)
    (loss_sum, correct), n = _reduce(dist, sums, seen)
    throughput, rates = _job_throughput(timer.timing, faults.skipped, dist)
    metrics = {"train_loss": loss_sum / n, "train_top1_err": 100 * (1 - correct / n), **throughput,
               **step.breakdown.summary(dist, timer.timing)}
    return EpochResult(metrics, rates, n)


class NonFiniteWatch:
    """Notes the first step whose loss is NaN or infinite, on the device (no host sync per step), and
    stops the run at the end of the epoch. Under fp16 loss scaling such steps are the scaler's business:
    it skips them and lowers the scale, so they are not faults."""

    def __init__(self, device: torch.device, scaler: torch.amp.GradScaler):
        self.scaler = scaler
        self.first = torch.full((), -1, dtype=torch.int64, device=device)
        self.skipped = torch.zeros((), dtype=torch.float64, device=device)
        # the scaler lowers its scale exactly when it skips a step; get_scale() syncs, but only here, once
        self.scale = torch.full((), scaler.get_scale() if scaler.is_enabled() else 1.0, device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        if self.scaler.is_enabled():
            now = self.scaler._scale  # the scale as a device tensor: reading it costs no sync
            self.skipped += (now < self.scale).double()
            self.scale = now.clone()
        else:
            self.first = torch.where(torch.isfinite(loss) | (self.first >= 0), self.first, step)

    def raise_if_any(self, dist) -> None:
        """Every rank learns whether any rank saw one, so all stop together; rank 0 names the step."""
        firsts = [row[0] for row in gather_per_rank(dist, [self.first])]  # -1: none on that rank
        seen = [(step, r) for r, step in enumerate(firsts) if step >= 0]
        if seen:
            step, where = min(seen)
            raise RunFault(f"non-finite training loss at step {int(step) + 1} of the epoch on rank {where}; "
                           f"the last good checkpoint is kept (lower --lr, or try --precision fp32)")


@torch.no_grad()
def evaluate(model: nn.Module, loader, autocast, dist, spec: DatasetSpec) -> dict:
    """Loss and top-1/top-5 error over the whole validation set, every image counted once across ranks."""
    started = time.perf_counter()
    model.eval()
    k = min(5, spec.num_classes)
    sums = torch.zeros(3, dtype=torch.float64, device=dist.ctx.device)  # loss sum, top-1 correct, top-k correct
    seen = 0
    for images, labels in loader:
        with autocast():
            logits = model(images).float()
        hits = logits.topk(k, dim=1).indices == labels[:, None]
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum"), hits[:, 0].sum(), hits.any(1).sum()])
        seen += len(labels)
    (loss_sum, top1, topk), n = _reduce(dist, sums, seen)
    if n != spec.val_size:
        raise RuntimeError(f"evaluated {n} images, but the validation set has {spec.val_size}")
    return {"val_loss": loss_sum / n, "val_top1_err": 100 * (1 - top1 / n), "val_top5_err": 100 * (1 - topk / n),
            "eval_time_s": time.perf_counter() - started}


def _reduce(dist, sums: torch.Tensor, seen: int) -> tuple[list[float], int]:
    """All-reduce device-side sums and the image count in one call; the one host sync of a pass."""
    packed = torch.cat([sums, torch.tensor([seen], dtype=torch.float64, device=sums.device)])
    *totals, n = dist.all_reduce_sum(packed).tolist()
    return totals, int(n)


def _job_throughput(timing: EpochTiming, skipped: torch.Tensor, dist) -> tuple[dict, list[float]]:
    """The job's figures from every rank's timing, in one gather: images/s = all ranks' steady-state images / the
    slowest rank's steady-state seconds; median and spread over the job's windows; the epoch's time, the slowest
    rank's; the steps fp16's scaler skipped, which every rank skips alike (the most any rank skipped, not their
    sum)."""
    ranks = gather_per_rank(dist, [timing.images, timing.seconds, timing.data_wait, skipped, timing.epoch_seconds,
                                   *(x for w in timing.windows for x in (w.images, w.seconds))])
    images, seconds, wait, skips, epoch_seconds = (sum(r[0] for r in ranks), max(r[1] for r in ranks),
                                                   sum(r[2] for r in ranks), max(r[3] for r in ranks),
                                                   max(r[4] for r in ranks))
    windows = job_windows([[Window(int(img), sec, w.full) for img, sec, w in zip(r[5::2], r[6::2], timing.windows)]
                           for r in ranks])
    rates = steady_rates(windows)
    median, spread = median_and_spread(rates)
    rate = images / seconds if seconds > 0 else math.nan
    busy = sum(r[1] for r in ranks)
    return {
        "train_images_per_sec": rate,
        "train_images_per_sec_per_worker": rate / dist.ctx.world_size,
        "train_images_per_sec_median": median,
        "train_images_per_sec_spread": spread,
        "epoch_time_s": epoch_seconds,
        "data_wait_frac": wait / busy if busy > 0 else math.nan,
        "amp_skipped_steps": skips,
    }, rates


def _run_metrics(last: dict, state: TrainState) -> dict:
    """The run's figures: over all its epochs, across the segments of a stopped and resumed or restarted run."""
    return {
        "best_val_top1_err": state.best_val_top1_err,
        "final_val_top1_err": last["val_top1_err"],
        "final_val_top5_err": last["val_top5_err"],
        "peak_mem_mib": state.peak_mem_mib,
        "train_time_s": state.train_seconds + state.eval_seconds,
        **(state.target or {}),
    }


def _configure_torch(cfg: TrainConfig, ctx) -> Threads:
    """torch's threads, determinism and CUDA device for this process; the threads chosen, and why."""
    device = ctx.device
    threads = process_threads(cfg.threads, ctx.local_world_size, device)
    torch.set_num_threads(threads.count)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for reproducible GEMMs
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not cfg.deterministic  # autotuning may pick other kernels per run
        torch.backends.cudnn.deterministic = cfg.deterministic
    return threads


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Every random draw of an epoch on a rank (dropout, augmentation in the main process) follows from (seed,
    epoch, rank): ranks draw different dropout masks, as the processes of one global batch must, and a run resumed
    at epoch k repeats exactly what an uninterrupted one did."""
    s = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)


def _flops(model: nn.Module, cfg: TrainConfig, spec: DatasetSpec) -> int:
    """Forward FLOPs per image; also the first proof that the net accepts this data set's input size."""
    try:
        return forward_flops_per_image(model, spec.image_size)
    except (RuntimeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"arch {cfg.arch} cannot take {spec.image_size}x{spec.image_size} images "
                         f"of {spec.name}: {first}") from None


def _progress(ctx, epoch: int, epochs: int) -> tqdm:
    """A bar on rank 0 when stderr is a terminal; nothing elsewhere."""
    return tqdm(desc=f"epoch {epoch}/{epochs}", unit="step", leave=False, dynamic_ncols=True,
                disable=None if ctx.is_main else True)


def _log_epoch(epoch: int, epochs: int, m: dict) -> None:
    log.info("epoch %d/%d  train loss %.4f err %.2f%%  val loss %.4f top-1 %.2f%% top-5 %.2f%%  "
             "%.1f img/s (window spread %s)  data wait %s  %.1f s",
             epoch, epochs, m["train_loss"], m["train_top1_err"], m["val_loss"], m["val_top1_err"],
             m["val_top5_err"], m["train_images_per_sec"], format_pct(m["train_images_per_sec_spread"]),
             format_pct(100 * m["data_wait_frac"]), m["epoch_time_s"])


def _run_params(cfg: TrainConfig, ctx, spec: DatasetSpec, arch_resolved: str) -> dict:
    """The config's settings that the schema declares (those left unset omitted), then what the job and the data
    set made of them."""
    settings = {k: v for k, v in cfg.to_dict().items() if k in PARAM_NAMES and v not in (None, ())}
    return {
        **settings, "arch_resolved": arch_resolved, "dataset": spec.name, "num_classes": spec.num_classes,
        "image_size": spec.image_size, "train_size": spec.train_size, "val_size": spec.val_size,
        "val_batch_size": cfg.data.eval_batch_size, "framework": "pytorch", "launcher": ctx.launcher,
        "world_size": ctx.world_size, "global_batch_size": cfg.data.batch_size * ctx.world_size,
        "backend": ctx.backend, "lr_scaled": scaled_lr(cfg, ctx.world_size),
        **environment_params(ctx.device),
    }


def _default_run_name(cfg: TrainConfig, ctx, spec: DatasetSpec) -> str:
    """What tells runs apart in MLflow's runs table: ``resnet18 imagenet b128 bf16 nhwc dali ddp×4``."""
    parts = [cfg.arch, spec.name, f"b{cfg.data.batch_size}", cfg.precision]
    parts += ["nhwc"] * cfg.data.channels_last + [cfg.data.loader] * (cfg.data.loader != "torch")
    parts += [f"{ctx.launcher}×{ctx.world_size}"] * (ctx.world_size > 1)
    return " ".join(parts)


def _resume_tags(checkpoint: dict, epoch: int, cfg: TrainConfig) -> dict[str, str]:
    """MLflow params cannot change, so a resumed run says in a tag which settings now differ from its params:
    ``cnnbench.resumed.epoch-6 = "epochs: 10 -> 20"``; the schedule follows the new ones."""
    before, now = checkpoint["config"], cfg.to_dict()
    changed = [f"{k}: {before.get(k)} -> {v}" for k, v in now.items() if before.get(k) != v and k != "resume"]
    return {RESUME_TAG.format(epoch=epoch): "; ".join(changed) or "no setting changed"}


def _payload(cfg: TrainConfig, t: Training, epoch_metrics: dict, epoch_series: dict) -> dict:
    return {
        "config": cfg.to_dict(), "state": dataclasses.asdict(t.state),
        "epoch_metrics": epoch_metrics, "epoch_series": epoch_series,
        "model": t.model.state_dict(), "optimizer": t.step.optimizer.state_dict(),
        "scaler": t.step.scaler.state_dict(),
    }


def _saved_state(payload: dict) -> TrainState:
    """Where a checkpointed run stands, and its run-level figures so far. Checkpoints written before those figures
    were kept in them hold the epoch, the best error and the run id at their top level."""
    return TrainState(**(payload.get("state") or {k: payload[k] for k in ("epoch", "best_val_top1_err", "run_id")}))


def _restore(payload: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler) -> None:
    """Weights, momentum buffers and loss scale from the checkpoint; the optimizer's settings and the schedule are
    set afterwards from the config the run resumes with."""
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise UsageError(f"checkpoint does not fit arch {payload['config']['arch']}: "
                         f"{str(err).splitlines()[0]}") from None
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
