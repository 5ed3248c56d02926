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
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
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
from train.engine.gpus import EnergyCounter, device_used_mib, energy_counter
from train.engine.measure import (
    EpochTimer,
    EpochTiming,
    RunClock,
    Window,
    format_pct,
    format_spread,
    full_batch_steps,
    images_per_sec,
    job_windows,
    median_and_spread,
    peak_memory_mib,
    peak_memory_reserved_mib,
    reset_peak_memory,
    steady_rates,
    window_series,
)
from train.engine.mfu import Peaks, job_peaks, mfu_pct, peak_params
from train.engine.schema import PARAM_NAMES, TRAIN_IMAGES_PER_SEC, VAL_ERROR, at_rank
from train.engine.signals import raise_if_terminated
from train.engine.stragglers import TAG as STRAGGLER_TAG
from train.engine.stragglers import describe, find_stragglers
from train.engine.threads import Threads, process_threads
from train.engine.tracking import RESUME_TAG, make_tracker, record_system_metrics, system_metrics_on, tracking_uri
from train.errors import RankError, RunFault, UsageError
from train.models import count_parameters, forward_flops_per_image

log = logging.getLogger("cnnbench")

TARGET_TAG = "cnnbench.target"


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
    peak_mem_reserved_mib: float = math.nan  # CUDA: the most torch's allocator of any rank reserved so far
    gpu_mem_used_mib: float = math.nan  # NVML: the most used on any rank's GPU at an epoch's end so far
    # every rank's GPU energy over the training epochs so far; NaN without an energy counter, or when resumed from
    # a checkpoint written before energy was counted (a new run starts at 0)
    energy_j: float = math.nan
    target: dict | None = None  # the time-to-target metrics, from the epoch that reached --target-top1-err
    run_seconds: float = 0.0  # the run clock (time_to_target_s) at the end of the last epoch's evaluation
    startup_seconds: float = 0.0  # each segment's start-up, before its run start, summed
    windows: int = 0  # steady-state timing windows logged so far (each has its step in the run)
    # the job's steady-state images and seconds over every epoch so far: train_images_per_sec is their ratio
    steady_images: int = 0
    steady_seconds: float = 0.0
    # per epoch: its val_top1_err and the time-to-target figures it would give as the first to reach a target, so a
    # target given at --resume is held against the epochs before it too
    epochs: list = field(default_factory=list)


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
    steady_images: int  # all ranks' steady-state images
    steady_seconds: float  # the slowest rank's steady-state seconds
    energy_j: float = math.nan  # every rank's GPU energy over the epoch
    straggler: str | None = None  # the ranks train/engine/stragglers.py names, in words


@dataclass
class RunSummary:
    run_id: str | None
    status: str
    tracking_uri: str
    metrics: dict  # run metrics and the last epoch's metrics
    checkpoint: Path | None
    epochs_done: int = 0  # epochs of the schedule completed, over every segment of the run


def run(cfg: TrainConfig, dist, checkpoint: dict | None = None, run_id: str | None = None) -> RunSummary:
    """Train ``cfg`` on the process set of ``dist``; ``checkpoint`` is a loaded payload to resume; ``run_id``
    reopens that MLflow run from epoch 1 (a torchrun job restarted before its first checkpoint)."""
    started = time.perf_counter()
    ctx = dist.ctx
    uri = tracking_uri(cfg.tracking_uri)
    saved = _saved_state(checkpoint, cfg.resume) if checkpoint else None
    run_id = saved.run_id if saved else run_id
    # a torchrun job notes its run as soon as it exists: restarted workers reopen it, whenever they were killed
    note_job_run = partial(remember_job_run, Path(cfg.checkpoint_dir), ctx.job_id) if ctx.job_id else None
    tracker = make_tracker(ctx.is_main, uri, cfg.experiment, run_id, cfg.tracking_grace_s, note_job_run)
    # rank 0 alone talks to the tracking store and writes checkpoints
    _check_before_work(dist, lambda: tracker.probe() or _unwritable(cfg.checkpoint_dir) if ctx.is_main else None)
    threads = _configure_torch(cfg, ctx)
    cfg, batch_search = fit_batch_size(synthetic_like_the_arch(cfg), dist)
    peaks = job_peaks(dist, AMP_DTYPES[cfg.precision] or torch.float32, cfg.peak_tflops, cfg.peak_cache,
                      cfg.remeasure_peak)
    torch.manual_seed(cfg.data.seed)
    # run start, as MLPerf Training sets it: before the data set is touched; the start-up before it is counted apart
    clock = RunClock(saved.run_seconds if saved else 0.0)
    loaders = build_loaders(cfg.data, ctx)
    spec = loaders.spec
    model, arch_resolved = build_model(cfg, spec)
    complexity = {"num_params": count_parameters(model), "flops_per_image": _flops(model, cfg, spec)}
    model.to(ctx.device, memory_format=torch.channels_last if cfg.data.channels_last else torch.preserve_format)
    _check_before_work(dist, lambda: _short_of_disk(cfg.checkpoint_dir, model) if ctx.is_main else None)
    _check_before_work(dist, lambda: _nondeterministic_op(model, cfg, spec, ctx.device) if ctx.is_main else None)
    training = _prepare(cfg, dist, model, checkpoint, saved or TrainState(energy_j=0.0))
    training.state.startup_seconds += clock.started - started

    run_name = cfg.run_name or _default_run_name(cfg, ctx, spec)
    system_metrics = system_metrics_on(cfg.system_metrics, ctx.world_size)
    energy = energy_counter(ctx.device)
    params = {**_run_params(cfg, ctx, spec, arch_resolved), "sgd_impl": sgd_impl(cfg, ctx.device),
              "batch_size_search": batch_search, **peak_params(peaks), "system_metrics": system_metrics,
              "energy_counter": energy.source, "num_threads_source": threads.source}
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
        epoch_figures = partial(_epoch, cfg=cfg, dist=dist, t=training, loaders=loaders, peaks=peaks,
                                flops=complexity["flops_per_image"], energy=energy)
        reset_peak_memory(ctx.device)  # start-up probes (batch search, peak FLOP/s) are no part of the run
        try:
            metrics, last_ckpt = _train_epochs(cfg, training, epoch_figures, tracker, save, end, ckpt_dir, clock)
        except KeyboardInterrupt:
            log.warning("stopped in epoch %d: %s", state.epoch + 1, _how_to_go_on(cfg, state))
            raise
        run_metrics = _run_metrics(metrics, state, ctx.world_size)
        tracker.log_metrics(run_metrics, step=0)
        if cfg.target_top1_err is not None and state.target is None:  # reached: tagged at that epoch
            tracker.set_tags({TARGET_TAG: _target_sentence(cfg, state)})
    return RunSummary(state.run_id, end.outcome(), uri, {**complexity, **metrics, **run_metrics}, last_ckpt,
                      state.epoch)


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
    reached = _first_reaching(cfg.target_top1_err, state.epochs)
    if cfg.stop_at_target and reached:
        raise UsageError(f"epoch {reached['epochs_to_target']} of the checkpoint already reached --target-top1-err "
                         f"{cfg.target_top1_err:g}: nothing left to train with --stop-at-target")
    scheduler = build_scheduler(optimizer, cfg, ctx.world_size, epochs_done=state.epoch)
    dist.broadcast_state(model, optimizer)

    wrapped = dist.wrap_model(model)  # DDP wraps before compiling, so compile sees its bucketing
    eval_model = maybe_compile(model, cfg)
    train_model = eval_model if wrapped is model else maybe_compile(wrapped, cfg)
    step = Step(train_model, optimizer, scaler, autocast(cfg.precision, ctx.device),
                StepBreakdown(ctx.device, cfg.breakdown_every, cfg.warmup_steps, wrapped), eager=wrapped)
    return Training(model, eval_model, step, scheduler, state)


def _train_epochs(cfg: TrainConfig, t: Training, epoch_figures: Callable[[int], EpochResult], tracker, save,
                  end, ckpt_dir: Path, clock: RunClock) -> tuple[dict, Path | None]:
    """The remaining epochs of the schedule; every epoch checkpointed, then logged. Stops early at --stop-after,
    or at the target with --stop-at-target."""
    state, metrics, last_ckpt = t.state, {}, None
    if _target_of_earlier_segments(cfg, state):  # a job killed before its tag, or a target new at --resume
        tracker.log_metrics(state.target, step=0)
        tracker.set_tags({TARGET_TAG: _target_sentence(cfg, state)})
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        result = epoch_figures(epoch)
        metrics = result.metrics
        series = window_series(state.windows, result.window_rates)
        _count(state, epoch, result, clock.seconds())
        reached = _reaches_target(cfg, state)
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


def _epoch(epoch: int, cfg: TrainConfig, dist, t: Training, loaders, peaks: Peaks, flops: int,
           energy: EnergyCounter) -> EpochResult:
    """Train one epoch and evaluate the model rank 0 checkpoints; the figures are the job's. Bad data that one rank
    meets mid-epoch (an unreadable image in its shard) stops every rank, with the line that names it, the line rank 0
    prints and the run records; the other ranks would otherwise wait for it in a collective until that broke off."""
    try:
        return _epoch_figures(epoch, cfg, dist, t, loaders, peaks, flops, energy)
    except UsageError as err:
        raise type(err)(f"{err}; once that is mended, {_how_to_go_on(cfg, t.state)}") from None
    except RuntimeError:  # a collective broke off: a rank that met bad data while training left it, saying why
        problem = dist.peers_problem()
        if problem is None:
            raise
        raise UsageError(f"{problem}; once that is mended, {_how_to_go_on(cfg, t.state)}") from None


def _how_to_go_on(cfg: TrainConfig, state: TrainState) -> str:
    """How a run stopped in the middle of an epoch goes on: from its last checkpoint, if it has one."""
    if state.epoch == 0:
        return "start the run again (no epoch was checkpointed yet)"
    return f"continue after epoch {state.epoch} with --resume {Path(cfg.checkpoint_dir) / str(state.run_id)}"


def _epoch_figures(epoch: int, cfg: TrainConfig, dist, t: Training, loaders, peaks: Peaks, flops: int,
                   energy: EnergyCounter) -> EpochResult:
    _seed_epoch(cfg.data.seed, epoch, dist.ctx.rank)
    loaders.train.set_epoch(epoch)
    lr = t.step.optimizer.param_groups[0]["lr"]
    try:
        result = train_one_epoch(t.step, loaders.train, cfg, dist, _progress(dist.ctx, epoch, cfg.epochs),
                                 energy.read_j)
    except RunFault as fault:
        raise RunFault(f"epoch {epoch}: {fault}") from None
    except UsageError as err:  # bad data in this rank's shard: the others wait for it in a collective until it exits
        dist.tell_peers(str(err))
        raise RankError(str(err)) from None  # said at once: rank 0 may be stopped as soon as this rank exits
    dist.broadcast_buffers(t.model)
    val = evaluate(t.eval_model, loaders.val, t.step.autocast, dist, loaders.spec)
    t.scheduler.step()
    _note_memory(dist, t.state)
    rate, world = result.metrics["epoch_images_per_sec"], dist.ctx.world_size
    result.metrics.update(val, lr=lr, mfu_pct=mfu_pct(flops, rate, peaks.rated.tflops, world),
                          mfu_measured_peak_pct=mfu_pct(flops, rate, peaks.measured.tflops, world))
    result.straggler = _stragglers(dist, result.metrics, result.window_rates, epoch)
    return result


def _stragglers(dist, metrics: dict, window_rates: list[float], epoch: int) -> str | None:
    """The ranks of the epoch that are stragglers, with their hosts; every rank decides alike from the same figures."""
    if dist.ctx.world_size < 2:
        return None
    busy = [metrics[at_rank("busy_ms", rank)] for rank in range(dist.ctx.world_size)]
    found = find_stragglers(busy, window_rates)
    return describe(found, gather_hostnames(dist), epoch) if found else None


def _count(state: TrainState, epoch: int, result: EpochResult, run_seconds: float) -> None:
    """Add an epoch to the run's figures; ``run_seconds``: the run clock at the end of its evaluation."""
    m = result.metrics
    state.epoch = epoch
    state.best_val_top1_err = min(state.best_val_top1_err, m["val_top1_err"])
    state.train_seconds += m["epoch_time_s"]
    state.eval_seconds += m["eval_time_s"]
    state.images += result.images
    state.energy_j += result.energy_j
    state.run_seconds = run_seconds
    state.windows += len(result.window_rates)
    state.steady_images += result.steady_images
    state.steady_seconds += result.steady_seconds
    state.epochs.append({"val_top1_err": m["val_top1_err"], "time_to_target_s": run_seconds,
                         "train_time_to_target_s": state.train_seconds, "eval_time_to_target_s": state.eval_seconds,
                         "epochs_to_target": epoch, "images_to_target": state.images,
                         **_known(energy_to_target_j=state.energy_j)})


def _first_reaching(target: float | None, epochs: list[dict]) -> dict | None:
    """The time-to-target figures of the first of ``epochs`` at or below ``target``; None where none is."""
    first = next((e for e in epochs if target is not None and e["val_top1_err"] <= target), None)
    return None if first is None else {k: v for k, v in first.items() if k != "val_top1_err"}


def _reaches_target(cfg: TrainConfig, state: TrainState) -> bool:
    """True at the first epoch whose error is at or below --target-top1-err; its figures go to ``state.target``."""
    if state.target is not None:
        return False
    state.target = _first_reaching(cfg.target_top1_err, state.epochs)
    return state.target is not None


def _target_of_earlier_segments(cfg: TrainConfig, state: TrainState) -> bool:
    """Whether the epochs of the run's earlier segments reached the target this segment trains towards (set in
    ``state.target``). A checkpoint written before the epochs were recorded keeps the target it holds."""
    if state.epochs:
        state.target = _first_reaching(cfg.target_top1_err, state.epochs)
    return cfg.target_top1_err is not None and state.target is not None


def _target_sentence(cfg: TrainConfig, state: TrainState) -> str:
    target = f"{cfg.target_top1_err:g} %"
    if state.target is not None:
        return (f"reached at epoch {state.target['epochs_to_target']} after "
                f"{state.target['time_to_target_s']:.1f} s from run start: top-1 error <= {target}")
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


def train_one_epoch(step: Step, loader, cfg: TrainConfig, dist, progress: tqdm,
                    energy_j: Callable[[], float] | None = None) -> EpochResult:
    """One pass over this rank's training shard; sums are reduced over ranks, then divided. ``energy_j`` reads the
    rank's GPU energy counter."""
    step.model.train()
    sums = torch.zeros(2, dtype=torch.float64, device=dist.ctx.device)  # loss sum, top-1 correct
    seen = 0
    timer = EpochTimer(dist.ctx.device, cfg.warmup_steps, cfg.window_steps,
                       on_window=lambda rate: progress.set_postfix_str(f"{rate:.0f} img/s", refresh=False),
                       energy_j=energy_j)
    faults = NonFiniteWatch(dist.ctx.device, step.scaler)
    steps = min(len(loader), cfg.data.steps or len(loader))
    timed = full_batch_steps(min(loader.num_samples, steps * cfg.data.batch_size), cfg.data.batch_size)
    progress.reset(total=steps)  # a percentage and the time left: an ImageNet epoch takes hours
    with progress:
        sampled = step.breakdown.iterate(loader, steps, timed)
        for i, (images, labels) in enumerate(timer.iterate(sampled, steps, timed)):
            raise_if_terminated()
            loss, logits = step(images, labels, eager=i >= timed)  # a short last batch: one compiled graph
            faults.observe(loss, i)
            sums += torch.stack([loss * len(labels), (logits.argmax(1) == labels).sum()])
            seen += len(labels)
            progress.update()
    faults.raise_if_any(dist)
    (loss_sum, correct), n = _reduce(dist, sums, seen)
    throughput, rates, steady, energy = _job_throughput(timer.timing, faults.skipped, dist)
    metrics = {"train_loss": loss_sum / n, "train_top1_err": 100 * (1 - correct / n), **throughput,
               **step.breakdown.summary(dist, timer.timing)}
    return EpochResult(metrics, rates, n, *steady, energy)


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
    # loss sum, top-1 correct, top-k correct, and whether this rank met bad data
    sums = torch.zeros(4, dtype=torch.float64, device=dist.ctx.device)
    seen, problem = 0, None
    try:
        for images, labels in loader:
            with autocast():
                logits = model(images).float()
            hits = logits.topk(k, dim=1).indices == labels[:, None]
            sums[:3] += torch.stack([F.cross_entropy(logits, labels, reduction="sum"), hits[:, 0].sum(),
                                     hits.any(1).sum()])
            seen += len(labels)
    except UsageError as err:  # bad data in this rank's share: every rank learns of it from the sums
        problem = str(err)
        dist.tell_peers(problem)
        sums[3] = 1
    (loss_sum, top1, topk, bad), n = _reduce(dist, sums, seen)
    if bad:  # rank 0 says it and the run records it, whichever rank met it
        raise UsageError(problem or dist.peers_problem() or "another rank met bad validation data")
    if n != spec.val_size:
        raise RuntimeError(f"evaluated {n} images, but the validation set has {spec.val_size}")
    return {"val_loss": loss_sum / n, "val_top1_err": 100 * (1 - top1 / n), "val_top5_err": 100 * (1 - topk / n),
            "eval_time_s": time.perf_counter() - started}


def _reduce(dist, sums: torch.Tensor, seen: int) -> tuple[list[float], int]:
    """All-reduce device-side sums and the image count in one call; the one host sync of a pass."""
    packed = torch.cat([sums, torch.tensor([seen], dtype=torch.float64, device=sums.device)])
    *totals, n = dist.all_reduce_sum(packed).tolist()
    return totals, int(n)


def _job_throughput(timing: EpochTiming, skipped: torch.Tensor,
                    dist) -> tuple[dict, list[float], tuple[int, float], float]:
    """The job's figures from every rank's timing, in one gather: the epoch's images/s = all ranks' steady-state
    images / the slowest rank's steady-state seconds; the spread over the job's windows; the epoch's time, the slowest
    rank's; the steps fp16's scaler skipped, which every rank skips alike (the most any rank skipped, not their
    sum); every rank's GPU energy summed, per steady-state image (nothing where there is no energy counter); and the
    epoch's steady-state (images, seconds) of the job, which the run's figure adds up, and its GPU energy."""
    ranks = gather_per_rank(dist, [timing.images, timing.seconds, timing.data_wait, skipped, timing.epoch_seconds,
                                   timing.energy_j, timing.epoch_energy_j,
                                   *(x for w in timing.windows for x in (w.images, w.seconds))])
    images, seconds, wait, skips, epoch_seconds = (sum(r[0] for r in ranks), max(r[1] for r in ranks),
                                                   sum(r[2] for r in ranks), max(r[3] for r in ranks),
                                                   max(r[4] for r in ranks))
    steady_energy, epoch_energy = sum(r[5] for r in ranks), sum(r[6] for r in ranks)
    windows = job_windows([[Window(int(img), sec, w.full) for img, sec, w in zip(r[7::2], r[8::2], timing.windows)]
                           for r in ranks])
    rates = steady_rates(windows)
    busy = sum(r[1] for r in ranks)
    return {
        "epoch_images_per_sec": images_per_sec(images, seconds),
        "epoch_images_per_sec_spread": median_and_spread(rates)[1],
        "epoch_time_s": epoch_seconds,
        "data_wait_frac": wait / busy if busy > 0 else math.nan,
        "amp_skipped_steps": skips,
        **_known(energy_per_image_j=steady_energy / images if images else math.nan),
    }, rates, (int(images), seconds), epoch_energy


def _note_memory(dist, state: TrainState) -> None:
    """The most any rank held so far: allocated by tensors, reserved by torch's allocator (CUDA), used on its GPU
    (NVML, at the epoch's end: DALI's own pools and the CUDA context included)."""
    device = dist.ctx.device
    ranks = gather_per_rank(dist, [peak_memory_mib(device), peak_memory_reserved_mib(device), device_used_mib(device)])
    state.peak_mem_mib = max(state.peak_mem_mib, *(r[0] for r in ranks))
    state.peak_mem_reserved_mib = _most(state.peak_mem_reserved_mib, *(r[1] for r in ranks))
    state.gpu_mem_used_mib = _most(state.gpu_mem_used_mib, *(r[2] for r in ranks))


def _most(*values: float) -> float:
    """The largest of the values that are known (not NaN); NaN when none is."""
    return max((v for v in values if not math.isnan(v)), default=math.nan)


def _known(**figures: float) -> dict:
    """The figures that are known: a device without a counter logs none rather than NaN."""
    return {name: value for name, value in figures.items() if not math.isnan(value)}


def _run_metrics(last: dict, state: TrainState, world_size: int) -> dict:
    """The run's figures: over all its epochs, across the segments of a stopped and resumed or restarted run."""
    rate = images_per_sec(state.steady_images, state.steady_seconds)
    return {
        TRAIN_IMAGES_PER_SEC: rate,
        "train_images_per_sec_per_worker": rate / world_size,
        VAL_ERROR: last["val_top1_err"],
        "best_val_top1_err": state.best_val_top1_err,
        "final_val_top5_err": last["val_top5_err"],
        "peak_mem_mib": state.peak_mem_mib,
        **_known(peak_mem_reserved_mib=state.peak_mem_reserved_mib, gpu_mem_used_mib=state.gpu_mem_used_mib),
        "train_time_s": state.train_seconds + state.eval_seconds,
        "startup_time_s": state.startup_seconds,
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


def _nondeterministic_op(model: nn.Module, cfg: TrainConfig, spec: DatasetSpec, device: torch.device) -> str | None:
    """Under --deterministic, why ``model`` cannot train so: the operation of its step that has no deterministic
    kernel on ``device`` (on CUDA, adaptive average pooling's backward in torchvision's VGG and AlexNet), found at
    start-up by one forward and backward of two blank images, not at the first step that meets it. Eval mode leaves
    BatchNorm statistics as they were; the gradients are dropped."""
    if not cfg.deterministic:
        return None
    images = torch.zeros(2, 3, spec.image_size, spec.image_size, device=device)
    if cfg.data.channels_last:
        images = images.to(memory_format=torch.channels_last)
    model.eval()
    try:
        with autocast(cfg.precision, device)():
            logits = model(images)
        logits.float().sum().backward()
    except RuntimeError as err:
        op = re.match(r"(\S+) does not have a deterministic implementation", str(err))
        if op is None:
            raise
        return (f"--deterministic: {op[1]} has no deterministic implementation, and arch {cfg.arch} needs it; "
                f"train without --deterministic, or with an arch without it")
    finally:
        model.zero_grad(set_to_none=True)
        model.train()
    return None


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
             m["val_top5_err"], m["epoch_images_per_sec"], format_spread(m["epoch_images_per_sec_spread"]),
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


def _saved_state(payload: dict, source: str | None) -> TrainState:
    """Where a checkpointed run stands, and its run-level figures so far. Checkpoints written before those figures
    were kept in them hold the epoch, the best error and the run id at their top level."""
    try:
        return TrainState(**(payload.get("state") or {k: payload[k] for k in ("epoch", "best_val_top1_err", "run_id")}))
    except (KeyError, TypeError) as err:  # TypeError: a state entry of other fields
        raise UsageError(f"--resume {source}: the checkpoint does not say where its run stands (no usable 'state' "
                         f"entry: {type(err).__name__} {err}); give an epoch-NNNN.pt file that cnnbench "
                         f"wrote") from None


def _restore(payload: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler) -> None:
    """Weights, momentum buffers and loss scale from the checkpoint; the optimizer's settings and the schedule are
    set afterwards from the config the run resumes with."""
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scaler.load_state_dict(payload["scaler"])
    except KeyError as err:
        raise UsageError(f"the checkpoint has no {err} entry; give an epoch-NNNN.pt file that cnnbench wrote") from None
    except (RuntimeError, ValueError) as err:  # torch's first line is only a heading: the detail follows it
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UsageError(f"checkpoint does not fit arch {payload['config']['arch']}: {' '.join(lines[:2])}") from None
