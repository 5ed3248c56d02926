"""The largest training batch that fits on the device: try one, halve it on out-of-memory, and say so.

``--max-batch-size N`` (in place of ``--batch-size``) makes the engine search before it builds anything: a few
training steps of the run's model at N, then N/2, ... until one fits; the run trains at that batch per process
and logs how it was found, e.g. ``batch_size_search = "oom at 512 -> 256"`` or ``"512 fits"``. Every rank
probes its own device and the job takes the smallest batch found. Probes run eagerly (torch.compile needs no
more memory than eager mode, except CUDA graphs under ``--compile-mode reduce-overhead``).
"""
from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from typing import Callable

import torch

from dataloaders import build_loaders
from train.engine.builders import Step, autocast, build_model, build_optimizer
from train.engine.config import TrainConfig
from train.engine.distributed import gather_per_rank
from train.engine.measure import synchronize
from train.errors import UsageError

PROBE_STEPS = 2  # the second step also holds the optimizer's momentum buffers


@dataclass(frozen=True)
class BatchFit:
    batch_size: int
    record: str  # how it was found, for the run's params


def largest_fitting_batch(fits: Callable[[int], None], largest: int) -> BatchFit:
    """``fits(batch)`` raises ``torch.OutOfMemoryError`` when ``batch`` does not fit; halve until it does not raise."""
    too_large, batch = [], largest
    while not _fits(fits, batch):
        too_large.append(batch)
        if batch == 1:
            raise UsageError(f"out of memory at every batch size from {largest} down to 1")
        batch //= 2
    record = f"oom at {', '.join(map(str, too_large))} -> {batch}" if too_large else f"{batch} fits"
    return BatchFit(batch, record)


def _fits(fits: Callable[[int], None], batch: int) -> bool:
    try:
        fits(batch)
        return True
    except torch.OutOfMemoryError:
        pass
    # out of the except block the exception is gone, and with it the frames that held the probe's tensors
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return False


def fit_batch_size(cfg: TrainConfig, dist) -> tuple[TrainConfig, str]:
    """``cfg`` at the batch found for ``--max-batch-size`` (and the record), or as it is with ``--batch-size``."""
    if cfg.max_batch_size is None:
        return cfg, "off (--batch-size)"
    fit = largest_fitting_batch(training_probe(cfg, dist.ctx), cfg.max_batch_size)
    batch = _smallest_over_ranks(dist, fit.batch_size)
    record = fit.record if batch == fit.batch_size else f"{fit.record}; {batch} fits every rank"
    data = dataclasses.replace(cfg.data, batch_size=batch)
    # the search is done: a resumed run continues at this batch instead of searching again
    return dataclasses.replace(cfg, data=data, max_batch_size=None), record


def training_probe(cfg: TrainConfig, ctx) -> Callable[[int], None]:
    """A few steps of the run's model, optimizer, precision and memory format on random batches of a given size."""
    spec = build_loaders(dataclasses.replace(cfg.data, batch_size=1, val_batch_size=1), ctx).spec
    memory_format = torch.channels_last if cfg.data.channels_last else torch.contiguous_format

    def fits(batch: int) -> None:
        model, _ = build_model(cfg, spec)
        model.to(ctx.device, memory_format=memory_format)
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
        step = Step(model, build_optimizer(model, cfg, 1, ctx.device), scaler,
                    autocast(cfg.precision, ctx.device))
        images = torch.randn(batch, 3, spec.image_size, spec.image_size, device=ctx.device)
        labels = torch.randint(spec.num_classes, (batch,), device=ctx.device)
        for _ in range(PROBE_STEPS):
            step(images.contiguous(memory_format=memory_format), labels)
        synchronize(ctx.device)

    return fits


def _smallest_over_ranks(dist, batch: int) -> int:
    return int(min(row[0] for row in gather_per_rank(dist, [batch])))
