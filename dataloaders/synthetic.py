"""Random images made once on the device: measures the model and the engine, never the input pipeline."""
from __future__ import annotations

import math

import torch

from dataloaders.contract import DataConfig, DatasetSpec, Loaders, digest
from dataloaders.normalization import MEAN_STD
from dataloaders.sharding import train_sampler, val_indices
from train.context import DistContext

POOL_BATCHES = 4  # the pool holds this many batches; every batch is a slice of it
VAL_STEPS = 2  # validation batches per process when --synthetic-val-size is not given


class SyntheticLoader:
    """``num_samples`` images per epoch served as views into a small on-device pool: no copy per step."""

    def __init__(self, num_samples: int, batch_size: int, generator: torch.Generator, cfg: DataConfig,
                 ctx: DistContext):
        self.num_samples, self.batch_size = num_samples, batch_size
        pool = min(num_samples, POOL_BATCHES * batch_size)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.images = torch.empty(pool, 3, cfg.image_size, cfg.image_size, device=ctx.device,
                                  memory_format=memory_format).normal_(generator=generator)
        self.labels = torch.randint(cfg.num_classes, (pool,), generator=generator, device=ctx.device)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Every epoch serves the same pool: nothing depends on the epoch."""

    def __iter__(self):
        slots = max(1, len(self.labels) // self.batch_size)  # whole batches in the pool (1 if it is smaller)
        for step in range(len(self)):
            start = (step % slots) * self.batch_size
            size = min(self.batch_size, self.num_samples - step * self.batch_size)
            yield self.images[start:start + size], self.labels[start:start + size]


def default_steps(device: torch.device) -> int:
    """Training steps per epoch when neither --synthetic-train-size nor --steps says: a quick run on a CPU (10
    steps of a CIFAR net take seconds), enough steady state on a GPU."""
    return 100 if device.type == "cuda" else 10


def sizes(cfg: DataConfig, ctx: DistContext) -> tuple[int, int]:
    """Training and validation images per epoch, all ranks: as given, else whole batches of every process."""
    steps = cfg.steps or default_steps(ctx.device)
    train = cfg.synthetic_train_size or steps * cfg.batch_size * ctx.world_size
    val = cfg.synthetic_val_size or VAL_STEPS * cfg.eval_batch_size * ctx.world_size
    return train, val


def build(cfg: DataConfig, ctx: DistContext) -> Loaders:
    if cfg.image_size is None or cfg.num_classes is None:
        raise ValueError("synthetic data needs image_size and num_classes: the engine sets them from the arch")
    mean, std = MEAN_STD["synthetic"]
    train_size, val_size = sizes(cfg, ctx)
    spec = DatasetSpec("synthetic", cfg.num_classes, cfg.image_size, mean, std, train_size, val_size,
                       source="synthetic", digest=digest(cfg.seed, cfg.image_size, cfg.num_classes, train_size, val_size))
    generator = torch.Generator(ctx.device).manual_seed(cfg.seed)  # one generator: train pool, then val pool
    train = SyntheticLoader(len(train_sampler(train_size, cfg, ctx)), cfg.batch_size, generator, cfg, ctx)
    val = SyntheticLoader(len(val_indices(val_size, ctx)), cfg.eval_batch_size, generator, cfg, ctx)
    return Loaders(spec, train, val)
