"""The one training engine: every launcher builds a ``Distributed`` seam and calls ``run``.

Reads top to bottom: ``run`` sets up data, model, optimiser, tracking and resumption, then loops over
``train_one_epoch`` and ``evaluate``. Rank-dependent behaviour (tracking, checkpoints, progress bars,
logs) is decided once in ``run``; the loop itself never asks which rank it is on.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
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
from train.checkpoint import save_checkpoint
from train.config import TrainConfig
from train.environment import environment_params
from train.errors import UsageError
from train.measure import EpochTimer, EpochTiming, format_pct, forward_flops_per_image, peak_memory_mb
from train.models import count_parameters, create_model, resolve_model
from train.schema import PARAM_NAMES
from train.tracking import make_tracker, tracking_uri

log = logging.getLogger("cnnbench")

AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


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


@dataclass
class Step:
    """One optimisation step with one mixed-precision path (the scaler is a no-op unless fp16)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad()  # None grads by default; Horovod's optimizer takes no set_to_none
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()


def run(cfg: TrainConfig, dist, checkpoint: dict | None = None) -> RunSummary:
    """Train ``cfg`` on the process set of ``dist``; ``checkpoint`` is a loaded payload to resume."""
    ctx = dist.ctx
    uri = tracking_uri(cfg.tracking_uri)
    tracker = make_tracker(ctx.is_main, uri, cfg.experiment, checkpoint["run_id"] if checkpoint else None)
    _check_before_work(dist, tracker)
    _configure_torch(cfg, ctx.device)
    torch.manual_seed(cfg.data.seed)
    loaders = build_loaders(cfg.data, ctx)
    spec = loaders.spec
    model, arch_resolved = build_model(cfg, spec)
    complexity = {"num_params": count_parameters(model), "flops_per_image": _flops(model, cfg, spec)}
    model.to(ctx.device, memory_format=torch.channels_last if cfg.data.channels_last else torch.preserve_format)

    optimizer = torch.optim.SGD(model.parameters(), lr=scaled_lr(cfg, ctx.world_size), momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    state = _restore(checkpoint, model, optimizer, scheduler, scaler) if checkpoint else TrainState()
    if state.epoch >= cfg.epochs:
        raise UsageError(f"the checkpoint is at epoch {state.epoch} of {cfg.epochs}: nothing left to train "
                         f"(give a larger --epochs to train further)")
    dist.broadcast_state(model, optimizer)

    wrapped = dist.wrap_model(model)  # DDP wraps before compiling, so compile sees its bucketing
    eval_model = _maybe_compile(model, cfg)  # evaluation bypasses DDP: ranks may hold unequal batch counts
    train_model = eval_model if wrapped is model else _maybe_compile(wrapped, cfg)
    step = Step(train_model, dist.wrap_optimizer(optimizer), scaler, _autocast(cfg, ctx.device))

    run_name = cfg.run_name or f"{cfg.arch}-{spec.name}-{ctx.launcher}"
    params = _run_params(cfg, ctx, spec, arch_resolved)
    last_ckpt = None
    started = time.perf_counter()
    # however it ends, the run is closed with a status
    with tracker.run(run_name, params, cfg.to_dict(), cfg.run_tags) as end:
        state.run_id = tracker.run_id
        ckpt_dir = Path(cfg.checkpoint_dir) / str(state.run_id)
        save = partial(save_checkpoint, ckpt_dir) if ctx.is_main else (lambda epoch, payload: None)
        if checkpoint is None:
            tracker.log_metrics(complexity, step=0)
        log.info("%s (%s): %.2f M params, %.1f MFLOPs/image; %s: %d train / %d val images; run %s",
                 cfg.arch, arch_resolved, complexity["num_params"] / 1e6, complexity["flops_per_image"] / 1e6,
                 spec.name, spec.train_size, spec.val_size, state.run_id)
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            _seed_epoch(cfg.data.seed, epoch)
            loaders.train.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            train = train_one_epoch(step, loaders.train, cfg, dist, _progress(ctx, epoch, cfg.epochs))
            val = evaluate(eval_model, loaders.val, step.autocast, dist, spec)
            scheduler.step()
            state.epoch = epoch
            state.best_val_top1_err = min(state.best_val_top1_err, val["val_top1_err"])
            metrics = {**train, **val, "lr": lr}
            tracker.log_metrics(metrics, step=epoch)
            _log_epoch(epoch, cfg.epochs, metrics)
            last_ckpt = save(epoch, _payload(cfg, state, model, optimizer, scheduler, scaler))
            if epoch == cfg.stop_after:
                end.status = "KILLED"
                end.reason = (f"stopped after epoch {epoch} of {cfg.epochs} (--stop-after); "
                              f"continue with --resume {ckpt_dir}")
                break
        run_metrics = _run_metrics(metrics, state, ctx.device, time.perf_counter() - started)
        tracker.log_metrics(run_metrics, step=0)
    return RunSummary(state.run_id, end.status, uri, {**complexity, **metrics, **run_metrics}, last_ckpt)


def _check_before_work(dist, tracker) -> None:
    """Problems found by rank 0 stop every rank at once, before any data or model is built."""
    problem = tracker.probe()
    flag = torch.tensor([float(problem is not None)], device=dist.ctx.device)
    if dist.all_reduce_sum(flag).item():
        raise UsageError(problem or "rank 0 found a problem at start-up (its message says which)")


def build_model(cfg: TrainConfig, spec: DatasetSpec) -> tuple[nn.Module, str]:
    """The model for ``spec``: 32x32-ish data prefers the CIFAR nets of a shared name, larger data ImageNet's."""
    prefer = "cifar" if spec.image_size <= 64 else "imagenet"
    entry = resolve_model(cfg.arch, prefer)
    return create_model(cfg.arch, spec.num_classes, prefer=prefer, dropout=cfg.dropout), entry.qualified_name


def scaled_lr(cfg: TrainConfig, world_size: int) -> float:
    """--lr is the rate for one process's batch; linear scaling (Goyal et al. 2017) grows it with the global batch."""
    return cfg.lr * world_size if cfg.lr_scaling == "linear" else cfg.lr


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Per-epoch learning-rate schedule."""
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def train_one_epoch(step: Step, loader, cfg: TrainConfig, dist, progress: tqdm) -> dict:
    """One pass over this rank's training shard; sums are reduced over ranks, then divided."""
    step.model.train()
    sums = torch.zeros(2, dtype=torch.float64, device=dist.ctx.device)  # loss sum, top-1 correct
    seen = 0
    timer = EpochTimer(dist.ctx.device, cfg.warmup_steps, cfg.window_steps,
                       on_window=lambda rate: progress.set_postfix_str(f"{rate:.0f} img/s", refresh=False))
    with progress:
        for images, labels in timer.iterate(loader, len(loader)):
            loss, logits = step(images, labels)
            sums += torch.stack([loss * len(labels), (logits.argmax(1) == labels).sum()])
            seen += len(labels)
            progress.update()
    (loss_sum, correct), n = _reduce(dist, sums, seen)
    return {"train_loss": loss_sum / n, "train_top1_err": 100 * (1 - correct / n), **_throughput(timer.timing, dist)}


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
    world, rank = dist.ctx.world_size, dist.ctx.rank
    # one sum carries every rank's seconds in its own slot (the seam needs no max or gather)
    local = torch.zeros(3 + world, dtype=torch.float64, device=dist.ctx.device)
    local[:3] = torch.tensor([timing.images, timing.seconds, timing.data_wait], dtype=torch.float64)
    local[3 + rank] = timing.seconds
    images, seconds_sum, wait, *per_rank = dist.all_reduce_sum(local).tolist()
    wall = max(per_rank)
    rate = images / wall if wall > 0 else float("nan")
    return {
        "train_images_per_sec": rate,
        "train_images_per_sec_per_worker": rate / world,
        "train_images_per_sec_median": timing.median_images_per_sec * world,
        "train_images_per_sec_spread": timing.spread_pct,
        "epoch_time_s": timing.epoch_seconds,
        "data_wait_frac": wait / seconds_sum if seconds_sum > 0 else float("nan"),
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
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)


def _seed_epoch(seed: int, epoch: int) -> None:
    """Every random draw of an epoch (dropout, augmentation in the main process) follows from (seed, epoch),
    so a run resumed at epoch k repeats exactly what an uninterrupted run did."""
    s = seed * 1_000_003 + epoch
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


def _maybe_compile(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    return torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model


def _autocast(cfg: TrainConfig, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    dtype = AMP_DTYPES[cfg.precision]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


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


def _payload(cfg, state: TrainState, model, optimizer, scheduler, scaler) -> dict:
    return {
        "config": cfg.to_dict(), "epoch": state.epoch, "best_val_top1_err": state.best_val_top1_err,
        "run_id": state.run_id, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
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
