"""The one training engine: every launcher builds a ``Distributed`` seam and calls ``run``.

Reads top to bottom: ``run`` sets up data, model, optimiser, tracking and resumption, then loops over
``train_one_epoch`` and ``evaluate``. Rank-dependent behaviour (tracking, checkpoints, progress bars,
logs) is decided once in ``run``; the loop itself never asks which rank it is on.
"""
from __future__ import annotations

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
)
from train.engine.checkpoint import remember_job_run, save_checkpoint
from train.engine.config import TrainConfig
from train.engine.distributed import gather_per_rank
from train.engine.environment import environment_params
from train.engine.measure import EpochTimer, EpochTiming, format_pct, peak_memory_mb
from train.engine.mfu import job_peak, mfu_pct
from train.engine.schema import PARAM_NAMES
from train.engine.tracking import make_tracker, record_system_metrics, system_metrics_on, tracking_uri
from train.errors import RankError, RunFault, UsageError
from train.models import count_parameters, forward_flops_per_image

log = logging.getLogger("cnnbench")

@dataclass
class TrainState:
    """What a checkpoint restores besides model, optimiser and schedule."""

    epoch: int = 0  # epochs completed
    best_val_top1_err: float = math.inf
    run_id: str | None = None


@dataclass
class RunSummary:
    run_id: str | None
    status: str
    tracking_uri: str
    metrics: dict  # run metrics and the last epoch's metrics
    checkpoint: Path | None


def run(cfg: TrainConfig, dist, checkpoint: dict | None = None) -> RunSummary:
    """Train ``cfg`` on the process set of ``dist``; ``checkpoint`` is a loaded payload to resume."""
    ctx = dist.ctx
    uri = tracking_uri(cfg.tracking_uri)
    tracker = make_tracker(ctx.is_main, uri, cfg.experiment, checkpoint["run_id"] if checkpoint else None,
                           cfg.tracking_grace_s)
    # rank 0 alone talks to the tracking store and writes checkpoints
    _check_before_work(dist, lambda: tracker.probe() or _unwritable(cfg.checkpoint_dir) if ctx.is_main else None)
    _configure_torch(cfg, ctx.device)
    cfg, batch_search = fit_batch_size(cfg, dist)
    peak = job_peak(dist, AMP_DTYPES[cfg.precision] or torch.float32, cfg.peak_tflops, cfg.peak_cache)
    torch.manual_seed(cfg.data.seed)
    loaders = build_loaders(cfg.data, ctx)
    spec = loaders.spec
    model, arch_resolved = build_model(cfg, spec)
    complexity = {"num_params": count_parameters(model), "flops_per_image": _flops(model, cfg, spec)}
    model.to(ctx.device, memory_format=torch.channels_last if cfg.data.channels_last else torch.preserve_format)
    _check_before_work(dist, lambda: _short_of_disk(cfg.checkpoint_dir, model) if ctx.is_main else None)

    optimizer = build_optimizer(model, cfg, ctx.world_size, ctx.device)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    state = _restore(checkpoint, model, optimizer, scheduler, scaler) if checkpoint else TrainState()
    if state.epoch >= cfg.epochs:
        raise UsageError(f"the checkpoint is at epoch {state.epoch} of {cfg.epochs}: nothing left to train "
                         f"(give a larger --epochs to train further)")
    dist.broadcast_state(model, optimizer)

    wrapped = dist.wrap_model(model)  # DDP wraps before compiling, so compile sees its bucketing
    eval_model = maybe_compile(model, cfg)  # evaluation bypasses DDP: ranks may hold unequal batch counts
    train_model = eval_model if wrapped is model else maybe_compile(wrapped, cfg)
    step = Step(train_model, dist.wrap_optimizer(optimizer), scaler, autocast(cfg.precision, ctx.device),
                StepBreakdown(ctx.device, cfg.breakdown_every, cfg.warmup_steps, wrapped))

    run_name = cfg.run_name or f"{cfg.arch}-{spec.name}-{ctx.launcher}"
    system_metrics = system_metrics_on(cfg.system_metrics, ctx.world_size)
    params = {**_run_params(cfg, ctx, spec, arch_resolved), "sgd_impl": sgd_impl(cfg, ctx.device),
              "batch_size_search": batch_search, "peak_tflops": peak.tflops, "peak_tflops_source": peak.source,
              "system_metrics": system_metrics}
    last_ckpt = None
    started = time.perf_counter()
    # however it ends, the run is closed with a status
    with tracker.run(run_name, params, cfg.to_dict(), cfg.run_tags) as end, \
            record_system_metrics(dist, tracker.run_id, uri, system_metrics, resumed=checkpoint is not None):
        state.run_id = tracker.run_id
        ckpt_dir = Path(cfg.checkpoint_dir) / str(state.run_id)
        save = partial(save_checkpoint, ckpt_dir) if ctx.is_main else (lambda epoch, payload: None)
        tracker.keep_undelivered_in(ckpt_dir)
        if checkpoint is None:
            tracker.log_metrics(complexity, step=0)
        else:  # a job killed between its last checkpoint and that epoch's metrics must not lose them
            tracker.ensure_logged(checkpoint.get("epoch_metrics", {}), step=checkpoint["epoch"])
        if ctx.is_main and ctx.job_id:
            remember_job_run(Path(cfg.checkpoint_dir), ctx.job_id, state.run_id)
        log.info("%s (%s): %.2f M params, %.1f MFLOPs/image; %s: %d train / %d val images; run %s",
                 cfg.arch, arch_resolved, complexity["num_params"] / 1e6, complexity["flops_per_image"] / 1e6,
                 spec.name, spec.train_size, spec.val_size, state.run_id)
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            _seed_epoch(cfg.data.seed, epoch)
            loaders.train.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            try:
                train = train_one_epoch(step, loaders.train, cfg, dist, _progress(ctx, epoch, cfg.epochs))
            except RunFault as fault:
                raise RunFault(f"epoch {epoch}: {fault}") from None
            val = evaluate(eval_model, loaders.val, step.autocast, dist, spec)
            scheduler.step()
            state.epoch = epoch
            state.best_val_top1_err = min(state.best_val_top1_err, val["val_top1_err"])
            metrics = {**train, **val, "lr": lr, "mfu_pct": mfu_pct(complexity["flops_per_image"],
                                                                    train["train_images_per_sec"], peak.tflops,
                                                                    ctx.world_size)}
            # checkpoint first: a job killed in between re-logs this epoch from the checkpoint when it resumes,
            # while metrics logged first would be logged twice by the epoch's rerun
            last_ckpt = save(epoch, _payload(cfg, state, metrics, model, optimizer, scheduler, scaler))
            tracker.log_metrics(metrics, step=epoch)
            _log_epoch(epoch, cfg.epochs, metrics)
            if epoch == cfg.stop_after:
                end.status = "KILLED"
                end.reason = (f"stopped after epoch {epoch} of {cfg.epochs} (--stop-after); "
                              f"continue with --resume {ckpt_dir}")
                break
        run_metrics = _run_metrics(metrics, state, ctx.device, time.perf_counter() - started)
        tracker.log_metrics(run_metrics, step=0)
    return RunSummary(state.run_id, end.status, uri, {**complexity, **metrics, **run_metrics}, last_ckpt)


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


def train_one_epoch(step: Step, loader, cfg: TrainConfig, dist, progress: tqdm) -> dict:
    """One pass over this rank's training shard; sums are reduced over ranks, then divided."""
    step.model.train()
    sums = torch.zeros(2, dtype=torch.float64, device=dist.ctx.device)  # loss sum, top-1 correct
    seen = 0
    timer = EpochTimer(dist.ctx.device, cfg.warmup_steps, cfg.window_steps,
                       on_window=lambda rate: progress.set_postfix_str(f"{rate:.0f} img/s", refresh=False))
    faults = NonFiniteWatch(dist.ctx.device, step.scaler)
    with progress:
        sampled = step.breakdown.iterate(loader, len(loader))
        for i, (images, labels) in enumerate(timer.iterate(sampled, len(loader))):
            loss, logits = step(images, labels)
            faults.observe(loss, i)
            sums += torch.stack([loss * len(labels), (logits.argmax(1) == labels).sum()])
            seen += len(labels)
            progress.update()
    faults.raise_if_any(dist)
    (loss_sum, correct, skipped), n = _reduce(dist, torch.cat([sums, faults.skipped[None]]), seen)
    return {"train_loss": loss_sum / n, "train_top1_err": 100 * (1 - correct / n), "amp_skipped_steps": skipped,
            **_throughput(timer.timing, dist),
            **step.breakdown.summary(dist, timer.timing)}


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


def _throughput(timing: EpochTiming, dist) -> dict:
    """Job images/s = steady-state images of all ranks / the slowest rank's steady-state wall seconds."""
    world = dist.ctx.world_size
    images, seconds, wait = zip(*gather_per_rank(dist, [timing.images, timing.seconds, timing.data_wait]))
    wall = max(seconds)
    rate = sum(images) / wall if wall > 0 else float("nan")
    return {
        "train_images_per_sec": rate,
        "train_images_per_sec_per_worker": rate / world,
        "train_images_per_sec_median": timing.median_images_per_sec * world,
        "train_images_per_sec_spread": timing.spread_pct,
        "epoch_time_s": timing.epoch_seconds,
        "data_wait_frac": sum(wait) / sum(seconds) if sum(seconds) > 0 else float("nan"),
    }


def _run_metrics(last: dict, state: TrainState, device: torch.device, seconds: float) -> dict:
    return {
        "best_val_top1_err": state.best_val_top1_err,
        "final_val_top1_err": last["val_top1_err"],
        "final_val_top5_err": last["val_top5_err"],
        "peak_mem_mb": peak_memory_mb(device),
        "train_time_s": seconds,
    }


def _configure_torch(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for reproducible GEMMs
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not cfg.deterministic  # autotuning may pick other kernels per run
        torch.backends.cudnn.deterministic = cfg.deterministic
        torch.cuda.reset_peak_memory_stats(device)


def _seed_epoch(seed: int, epoch: int) -> None:
    """Every random draw of an epoch (dropout, augmentation in the main process) follows from (seed, epoch),
    so a run resumed at epoch k repeats exactly what an uninterrupted run did."""
    s = seed * 1_000_003 + epoch
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


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
    """The config's settings that the schema declares, then what the job and the data set made of them."""
    settings = {k: v for k, v in cfg.to_dict().items() if k in PARAM_NAMES}
    return {
        **settings, "arch_resolved": arch_resolved, "dataset": spec.name, "num_classes": spec.num_classes,
        "image_size": spec.image_size, "train_size": spec.train_size, "val_size": spec.val_size,
        "val_batch_size": cfg.data.eval_batch_size, "framework": "pytorch", "launcher": ctx.launcher,
        "world_size": ctx.world_size, "global_batch_size": cfg.data.batch_size * ctx.world_size,
        "backend": ctx.backend, "lr_scaled": scaled_lr(cfg, ctx.world_size),
        **environment_params(ctx.device),
    }


def _payload(cfg, state: TrainState, epoch_metrics: dict, model, optimizer, scheduler, scaler) -> dict:
    return {
        "config": cfg.to_dict(), "epoch": state.epoch, "best_val_top1_err": state.best_val_top1_err,
        "run_id": state.run_id, "epoch_metrics": epoch_metrics,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
    }


def _restore(payload: dict, model, optimizer, scheduler, scaler) -> TrainState:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise UsageError(f"checkpoint does not fit arch {payload['config']['arch']}: "
                         f"{str(err).splitlines()[0]}") from None
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    return TrainState(payload["epoch"], payload["best_val_top1_err"], payload["run_id"])
